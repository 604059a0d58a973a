"""What a round reports: flat metrics for MLflow and rows for the round table (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from primia.federation.coordinator import Evaluation
from primia.messages import HospitalResult
from primia.training.metrics import mcc_from_confusion


def round_table(results: Sequence[HospitalResult]) -> list[dict[str, Any]]:
    return [
        {
            "hospital": r.hospital,
            "samples": r.num_examples,
            "train_loss": None if math.isnan(r.train_loss) else round(r.train_loss, 4),
            "val_samples": int(r.metrics.get("val_samples", 0)),
            "val_mcc_incoming": round(mcc_from_confusion(np.asarray(r.val_confusion)), 4),
            "local_s": round(r.local_s, 3),
            "update_sha256": r.update.sha256[:12] if r.update else "",
        }
        for r in results
    ]


def round_metrics(
    results: Sequence[HospitalResult], validation: dict[str, float], evaluation: Evaluation,
    timing: dict[str, float],
) -> dict[str, float]:
    per_round: dict[str, float] = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    total = sum(r.num_examples for r in results)
    losses = [r.train_loss * r.num_examples for r in results if not math.isnan(r.train_loss)]
    if losses:
        per_round["train_loss"] = sum(losses) / total
    for r in results:
        per_round[f"{r.hospital}.train_loss"] = r.train_loss
        per_round[f"{r.hospital}.local_s"] = r.local_s
    per_round.update({f"time.{k}": v for k, v in timing.items()})
    return per_round


def round_markdown(federation_id: str, server_round: int, results: Sequence[HospitalResult],
                   validation: dict[str, float], evaluation: Evaluation, timing: dict[str, float]) -> str:
    """A short human summary of one round for the Prefect UI."""
    m = evaluation.metrics
    lines = [
        f"# {federation_id}: round {server_round}",
        f"{len(results)} hospitals, {sum(r.num_examples for r in results)} training samples; "
        f"round {timing['round_s']:.2f} s (slowest hospital {timing['local_s_max']:.2f} s).",
        "",
        "| held-out test | value |", "| --- | --- |",
        *[f"| {k} | {m[k]:.4f} |" for k in ("mcc", "roc_auc", "balanced_accuracy", "accuracy")],
    ]
    if validation:
        lines += ["", f"Pooled validation MCC of the previous global model: {validation['val_mcc']:.4f}."]
    return "\n".join(lines)
