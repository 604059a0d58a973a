"""The aggregation strategy interface. One file per algorithm; `server_round` comes first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from primia.federation.fedavg import weighted_average
from primia.store.weights import Weights


@dataclass(frozen=True)
class ClientUpdate:
    hospital: str
    weights: Weights
    num_examples: int


class Strategy(Protocol):
    name: str

    def aggregate(self, server_round: int, current: Weights, updates: list[ClientUpdate]) -> Weights:
        """New global weights from the current ones and this round's updates."""
        ...


class FedAvg:
    """McMahan et al. 2017: the sample-weighted mean of the hospitals' weights."""

    name = "fedavg"

    def aggregate(self, server_round: int, current: Weights, updates: list[ClientUpdate]) -> Weights:
        return weighted_average([u.weights for u in updates], [u.num_examples for u in updates])
