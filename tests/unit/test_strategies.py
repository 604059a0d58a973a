"""Strategies against hand-computed answers: FedProx, FedAdam, FedYogi, median, trimmed mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primia.config import StrategyConfig, TrainingConfig
from primia.data.synthetic import make_synthetic
from primia.errors import ConfigError
from primia.federation.fedopt import FedAdam, FedYogi
from primia.federation.fedprox import FedProx
from primia.federation.robust import Median, TrimmedMean
from primia.federation.strategies import make_strategy
from primia.federation.strategy import ClientUpdate, StrategyState
from primia.models.factory import build_model
from primia.training.loops import train_epochs


def _ups(*values: float, counts: tuple[int, ...] | None = None) -> list[ClientUpdate]:
    counts = counts or tuple(1 for _ in values)
    return [ClientUpdate(f"h{i}", {"w": np.array([v], dtype=np.float32)}, n)
            for i, (v, n) in enumerate(zip(values, counts, strict=True))]


def test_fedadam_known_answer_two_rounds() -> None:
    s = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    cur = {"w": np.array([1.0], dtype=np.float32)}
    # round 1: mean of updates = 2.0 -> delta 1.0; m = 0.1; v = 0.99*1e-4 + 0.01*1 = 0.010099
    new, st = s.aggregate(1, cur, _ups(1.5, 2.5), StrategyState())
    m1, v1 = 0.1, 0.99 * 1e-4 + 0.01
    assert new["w"][0] == pytest.approx(1.0 + 0.1 * m1 / (np.sqrt(v1) + 0.01), rel=1e-6)
    assert st.step == 1 and st.arrays["m/w"][0] == pytest.approx(m1)
    # round 2 carries the moments: delta = 0 -> m = 0.09, v = 0.99 v1
    new2, st2 = s.aggregate(2, new, _ups(float(new["w"][0])), st)
    m2, v2 = 0.9 * m1, 0.99 * v1
    assert new2["w"][0] == pytest.approx(new["w"][0] + 0.1 * m2 / (np.sqrt(v2) + 0.01), rel=1e-5)
    assert st2.step == 2


def test_fedyogi_second_moment_known_answer() -> None:
    s = FedYogi(server_lr=0.1, beta1=0.0, beta2=0.9, tau=0.1)
    _, st = s.aggregate(1, {"w": np.array([0.0], dtype=np.float32)}, _ups(2.0), StrategyState())
    # v0 = tau^2 = 0.01, delta^2 = 4: v = 0.01 - 0.1*4*sign(0.01-4) = 0.41
    assert st.arrays["v/w"][0] == pytest.approx(0.41)


def test_median_and_trimmed_mean_resist_a_poisoned_update() -> None:
    cur = {"w": np.zeros(1, dtype=np.float32)}
    ups = _ups(1.0, 1.1, 0.9, 1.05, 1000.0, counts=(10, 10, 10, 10, 10_000))  # one liar, claiming many samples
    med, _ = Median().aggregate(1, cur, ups, StrategyState())
    assert med["w"][0] == pytest.approx(1.05)
    tm, _ = TrimmedMean(0.2).aggregate(1, cur, ups, StrategyState())  # drops 1 from each end of 5
    assert tm["w"][0] == pytest.approx(np.mean([1.0, 1.05, 1.1]))
    avg, _ = make_strategy(StrategyConfig()).aggregate(1, cur, ups, StrategyState())
    assert avg["w"][0] > 900  # plain FedAvg is captured by the liar


def test_factory_and_validation() -> None:
    assert make_strategy(StrategyConfig(name="fedprox", proximal_mu=0.5)).proximal_mu == 0.5
    assert make_strategy(StrategyConfig(name="fedyogi")).name == "fedyogi"
    assert make_strategy(StrategyConfig(name="trimmed_mean")).name == "trimmed_mean"
    with pytest.raises(ConfigError, match="proximal_mu > 0"):
        FedProx(0.0)
    with pytest.raises(ConfigError, match="trim_fraction"):
        TrimmedMean(0.5)
    with pytest.raises(ConfigError, match="beta1 and beta2"):
        FedAdam(beta1=1.0)


def test_fedprox_term_keeps_weights_closer_to_the_start() -> None:
    data = make_synthetic(64, 2, 16, seed=0)
    cfg = TrainingConfig(batch_size=16, lr=0.05, local_epochs=3)

    def drift(mu: float) -> float:
        model = build_model("small_cnn", seed=0)
        start = [p.detach().clone() for p in model.parameters()]
        torch.manual_seed(0)
        train_epochs(model, data, cfg, None, seed=0, proximal_mu=mu)
        return float(sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True)))

    assert drift(10.0) < 0.5 * drift(0.0)
