"""Byzantine-robust aggregation: coordinate-wise median and trimmed mean (Yin et al., ICML 2018).

Both ignore sample counts on purpose: weighting would let one hospital that claims many samples
outvote the rest, which is the attack these rules exist to resist.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import trim_mean

from primia.errors import ConfigError
from primia.federation.strategy import ClientUpdate, StrategyState
from primia.store.weights import Weights


def _stack(updates: list[ClientUpdate], key: str) -> np.ndarray:
    return np.stack([u.weights[key].astype(np.float64) for u in updates])


class Median:
    name = "median"
    proximal_mu = 0.0
    needs_each_update = True

    def aggregate(
        self, server_round: int, current: Weights, updates: list[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        out = {k: np.median(_stack(updates, k), axis=0).astype(w.dtype) for k, w in current.items()}
        return out, StrategyState(step=state.step + 1)

    def aggregate_mean(
        self, server_round: int, current: Weights, mean: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        raise ConfigError(f"strategy {self.name} needs each hospital's update; it cannot run on a securely "
                          f"aggregated mean")


class TrimmedMean:
    name = "trimmed_mean"
    proximal_mu = 0.0
    needs_each_update = True

    def __init__(self, trim_fraction: float = 0.1) -> None:
        if not 0 <= trim_fraction < 0.5:
            raise ConfigError(f"trimmed_mean: trim_fraction must be in [0, 0.5), got {trim_fraction}")
        self.beta = trim_fraction

    def aggregate(
        self, server_round: int, current: Weights, updates: list[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        out = {k: trim_mean(_stack(updates, k), self.beta, axis=0).astype(w.dtype) for k, w in current.items()}
        return out, StrategyState(step=state.step + 1)

    def aggregate_mean(
        self, server_round: int, current: Weights, mean: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        raise ConfigError(f"strategy {self.name} needs each hospital's update; it cannot run on a securely "
                          f"aggregated mean")
