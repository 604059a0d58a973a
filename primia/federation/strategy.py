"""The aggregation strategy interface: one small protocol, one file per algorithm.

`server_round` comes first; state that must survive rounds (a server optimizer's moments) is an
explicit `StrategyState` passed in and returned, never kept on the object, so it is checkpointed
with the round and a resumed federation continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from primia.store.weights import Weights


@dataclass(frozen=True)
class ClientUpdate:
    hospital: str
    weights: Weights
    num_examples: int


@dataclass(frozen=True)
class StrategyState:
    """Arrays a strategy carries between rounds (e.g. 'm/<tensor>', 'v/<tensor>') and its step count."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0


class Strategy(Protocol):
    name: str
    proximal_mu: float  # > 0: hospitals add (mu/2)||w - w_global||^2 to their loss (FedProx)
    needs_each_update: bool  # True: works only on individual updates (robust ones), not under SecAgg

    def aggregate(
        self, server_round: int, current: Weights, updates: list[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """New global weights (and state) from the current ones and this round's updates."""
        ...

    def aggregate_mean(
        self, server_round: int, current: Weights, mean: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The same from only the sample-weighted mean of the updates (what secure aggregation yields)."""
        ...


class FedAvg:
    """McMahan et al. 2017: the sample-weighted mean of the hospitals' weights."""

    name = "fedavg"
    proximal_mu = 0.0
    needs_each_update = False

    def aggregate(
        self, server_round: int, current: Weights, updates: list[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        from primia.federation.fedavg import weighted_average

        mean = weighted_average([u.weights for u in updates], [u.num_examples for u in updates])
        return self.aggregate_mean(server_round, current, mean, state)

    def aggregate_mean(
        self, server_round: int, current: Weights, mean: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        return mean, StrategyState(step=state.step + 1)
