"""Frozen messages passed between coordinator and hospitals: references, never tensors or keys."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckpointRef:
    """Where a set of weights lives in the object store and how to check it."""

    bucket: str
    key: str
    digest: str  # of the stored (encrypted) bytes: 'blake3:<hex>', or a bare sha256 hex if written earlier
    round: int


@dataclass(frozen=True)
class HospitalResult:
    """What a hospital returns after a round: a reference to its update plus small statistics.

    `num_examples` counts training samples (never batches): FedAvg weights by it.
    `val_confusion` is the confusion matrix of the *incoming* global model on the hospital's
    validation split, so the coordinator can select models by pooled validation MCC without
    seeing any image or prediction.
    `nonce` echoes the coordinator's per-dispatch challenge, so a signed result cannot be replayed
    into another dispatch.
    """

    hospital: str
    round: int
    num_examples: int
    update: CheckpointRef | None
    train_loss: float
    val_confusion: tuple[tuple[int, ...], ...]
    local_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    nonce: str = ""  # the coordinator's per-dispatch challenge, signed back (distributed mode)
