"""FedAdam and FedYogi (Reddi et al., ICLR 2021, "Adaptive Federated Optimization").

The server treats delta = FedAvg(updates) - current as a pseudo-gradient and applies an adaptive
optimizer step: m = b1 m + (1-b1) delta; v as below; w = w + eta m / (sqrt(v) + tau).
  FedAdam: v = b2 v + (1-b2) delta^2
  FedYogi: v = v - (1-b2) delta^2 sign(v - delta^2)
No bias correction (as in the paper's Algorithm 2). Both share everything but the v update, so
they live in one file. Integer tensors (counters) take the plain weighted mean.
"""

from __future__ import annotations

import numpy as np

from primia.errors import ConfigError
from primia.federation.fedavg import weighted_average
from primia.federation.strategy import ClientUpdate, StrategyState
from primia.store.weights import Weights


class _FedOpt:
    name = "fedopt"
    proximal_mu = 0.0
    needs_each_update = False

    def __init__(self, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        if server_lr <= 0 or tau <= 0:
            raise ConfigError(f"{self.name}: server_lr and tau must be > 0, got {server_lr} and {tau}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ConfigError(f"{self.name}: beta1 and beta2 must be in [0, 1), got {beta1} and {beta2}")
        self.eta, self.b1, self.b2, self.tau = server_lr, beta1, beta2, tau

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def aggregate(
        self, server_round: int, current: Weights, updates: list[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        mean = weighted_average([u.weights for u in updates], [u.num_examples for u in updates])
        return self.aggregate_mean(server_round, current, mean, state)

    def aggregate_mean(
        self, server_round: int, current: Weights, mean: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        new: Weights = {}
        arrays: dict[str, np.ndarray] = {}
        for k, w in current.items():
            if not np.issubdtype(w.dtype, np.floating):
                new[k] = mean[k]
                continue
            delta = mean[k].astype(np.float64) - w.astype(np.float64)
            m = self.b1 * state.arrays.get(f"m/{k}", np.zeros_like(delta)) + (1 - self.b1) * delta
            v = self._second_moment(state.arrays.get(f"v/{k}", np.full_like(delta, self.tau**2)), delta**2)
            new[k] = (w + self.eta * m / (np.sqrt(v) + self.tau)).astype(w.dtype)
            arrays[f"m/{k}"], arrays[f"v/{k}"] = m, v
        return new, StrategyState(arrays, state.step + 1)


class FedAdam(_FedOpt):
    name = "fedadam"

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return self.b2 * v + (1 - self.b2) * d2


class FedYogi(_FedOpt):
    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1 - self.b2) * d2 * np.sign(v - d2)
