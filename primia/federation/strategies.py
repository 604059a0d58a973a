"""Build the configured strategy by name."""

from __future__ import annotations

from primia.config import StrategyConfig
from primia.federation.fedopt import FedAdam, FedYogi
from primia.federation.fedprox import FedProx
from primia.federation.robust import Median, TrimmedMean
from primia.federation.strategy import FedAvg, Strategy


def make_strategy(cfg: StrategyConfig) -> Strategy:
    if cfg.name == "fedprox":
        return FedProx(cfg.proximal_mu)
    if cfg.name in ("fedadam", "fedyogi"):
        cls = FedAdam if cfg.name == "fedadam" else FedYogi
        return cls(cfg.server_lr, cfg.beta1, cfg.beta2, cfg.tau)
    if cfg.name == "median":
        return Median()
    if cfg.name == "trimmed_mean":
        return TrimmedMean(cfg.trim_fraction)
    return FedAvg()
