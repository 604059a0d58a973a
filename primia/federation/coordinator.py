"""The coordinator's side of a round: initial model, aggregation, evaluation, model selection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from primia.config import FederationConfig
from primia.data.imageset import ImageSet
from primia.data.sources import cached_source
from primia.errors import PrimiaError
from primia.federation.hospital import check_classes, model_from_weights
from primia.federation.strategy import ClientUpdate, Strategy, StrategyState
from primia.messages import CheckpointRef, HospitalResult
from primia.models.factory import build_model, set_input_normalization
from primia.store.checkpoints import CheckpointStore
from primia.store.weights import Weights, state_to_numpy
from primia.training.loops import predict
from primia.training.metrics import (
    balanced_accuracy_from_confusion,
    classification_metrics,
    mcc_from_confusion,
)


def initial_weights(cfg: FederationConfig, normalization: tuple[float, float] | None = None) -> Weights:
    model = build_model(cfg.model, seed=cfg.seed)
    if normalization is not None:
        set_input_normalization(model, *normalization)
    return state_to_numpy(model.state_dict())


def load_test_set(cfg: FederationConfig) -> ImageSet:
    data = cached_source(cfg.test_data, cfg.data.image_size, cfg.class_names)
    check_classes(data, cfg, "coordinator test set")
    return data


def aggregate(
    strategy: Strategy, server_round: int, current: Weights, results: Sequence[HospitalResult],
    mailbox: Callable[[str], CheckpointStore], state: StrategyState,
) -> tuple[Weights, StrategyState]:
    """Plaintext aggregation (secure aggregation off): each update read from its hospital's mailbox."""
    updates = []
    for r in results:
        if r.update is None:
            raise PrimiaError(f"hospital {r.hospital} returned no update for round {server_round}")
        updates.append(ClientUpdate(r.hospital, mailbox(r.hospital).get_weights(r.update), r.num_examples))
    return strategy.aggregate(server_round, current, updates, state)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    labels: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]


def evaluate(cfg: FederationConfig, weights: Weights, test: ImageSet) -> Evaluation:
    probs = predict(model_from_weights(cfg, weights), test)
    metrics = classification_metrics(test.labels, probs, test.class_names)
    return Evaluation(metrics, test.labels, probs, test.class_names)


def pooled_validation(cm: np.ndarray | None) -> dict[str, float]:
    """Validation scores of the incoming global model from the hospitals' summed confusion matrices
    (under secure aggregation only the sum exists): exact, and no hospital shares a prediction."""
    if cm is None:
        cm = np.zeros((2, 2), dtype=np.int64)
    cm = np.asarray(cm)
    return {
        "val_mcc": mcc_from_confusion(cm),
        "val_balanced_accuracy": balanced_accuracy_from_confusion(cm),
        "val_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
    }


@dataclass
class Selection:
    """Model selection by validation MCC (as PriMIA): the best round seen so far."""

    best_round: int = -1
    best_val_mcc: float = float("-inf")
    best_ref: CheckpointRef | None = None
    history: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"best_round": self.best_round, "best_val_mcc": self.best_val_mcc if self.best_round >= 0 else None,
                "best_ref": asdict(self.best_ref) if self.best_ref else None,
                "history": {str(k): v for k, v in self.history.items()}}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Selection:
        ref = data.get("best_ref")
        return Selection(
            best_round=int(data["best_round"]),
            best_val_mcc=float("-inf") if data.get("best_val_mcc") is None else float(data["best_val_mcc"]),
            best_ref=CheckpointRef(**ref) if ref else None,
            history={int(k): float(v) for k, v in data.get("history", {}).items()},
        )

    def offer(self, server_round: int, val_mcc: float, ref: CheckpointRef) -> bool:
        self.history[server_round] = val_mcc
        if val_mcc > self.best_val_mcc:
            self.best_round, self.best_val_mcc, self.best_ref = server_round, val_mcc, ref
            return True
        return False
