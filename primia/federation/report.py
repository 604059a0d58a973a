"""What a round reports: flat metrics for MLflow and rows for the round table (pure functions)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from primia.federation.coordinator import Evaluation
from primia.federation.policy import Outcome, accepted_results
from primia.federation.rounds import Pooled
from primia.messages import HospitalResult
from primia.training.metrics import mcc_from_confusion


def round_table(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One row per asked hospital: accepted ones with their figures, the others with the reason."""
    return [_row(o) for o in outcomes]


def _row(o: Outcome) -> dict[str, Any]:
    """Per-hospital figures exist only in plaintext mode; under secure aggregation a row says whether the
    hospital is in the sum, and the pooled figures are in the round's description."""
    r = o.result
    clear = r is not None and not r.metrics.get("masked")
    return {
        "hospital": o.hospital,
        "status": o.status,
        "reason": o.reason,
        "samples": r.num_examples if r and clear else None,
        "train_loss": None if not clear or r is None or math.isnan(r.train_loss) else round(r.train_loss, 4),
        "val_samples": int(r.metrics.get("val_samples", 0)) if r and clear else None,
        "val_mcc_incoming": round(mcc_from_confusion(np.asarray(r.val_confusion)), 4)
        if r and clear and np.asarray(r.val_confusion).size else None,
        "epsilon": round(r.metrics["epsilon"], 4) if r and "epsilon" in r.metrics else None,
        "local_s": round(r.local_s, 3) if r else None,
        "seconds": round(o.seconds, 3),
        "update_digest": r.update.digest.rpartition(":")[2][:12] if r and r.update else "",
    }


def round_metrics(
    results: Sequence[HospitalResult], pooled: Pooled, evaluation: Evaluation, timing: dict[str, float],
    per_hospital: bool = True,
) -> dict[str, float]:
    per_round: dict[str, float] = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    if not math.isnan(pooled.train_loss):
        per_round["train_loss"] = pooled.train_loss
    per_round["train_samples"] = float(pooled.num_examples)
    if not per_hospital:  # secure aggregation: only sums exist
        per_round["clipped_coordinates"] = float(pooled.clipped)
    for r in results if per_hospital else []:
        per_round[f"{r.hospital}.train_loss"] = r.train_loss
        per_round[f"{r.hospital}.local_s"] = r.local_s
    per_round.update({f"time.{k}": v for k, v in timing.items()})
    return per_round


def round_markdown(federation_id: str, server_round: int, outcomes: Sequence[Outcome], pooled: Pooled,
                   validation: dict[str, float], evaluation: Evaluation, timing: dict[str, float],
                   secure: str = "") -> str:
    """A short human summary of one round for the Prefect UI."""
    m, results = evaluation.metrics, accepted_results(outcomes)
    lines = [
        f"# {federation_id}: round {server_round}",
        f"{len(results)} hospitals, {pooled.num_examples} training samples; "
        f"round {timing['round_s']:.2f} s (slowest hospital {timing['local_s_max']:.2f} s).",
        *([f"**{secure}.**"] if secure else []),
        "",
        "| held-out test | value |", "| --- | --- |",
        *[f"| {k} | {m[k]:.4f} |" for k in ("mcc", "roc_auc", "balanced_accuracy", "accuracy")],
    ]
    if validation:
        lines += ["", f"Pooled validation MCC of the previous global model: {validation['val_mcc']:.4f}."]
    lines += _not_accepted(outcomes)
    return "\n".join(lines)


def _not_accepted(outcomes: Sequence[Outcome]) -> list[str]:
    others = [o for o in outcomes if o.result is None or o.status != "accepted"]
    if not others:
        return []
    return ["", "| did not answer cleanly | status | reason |", "| --- | --- | --- |",
            *[f"| {o.hospital} | {o.status} | {o.reason} |" for o in others]]


def failed_round_markdown(federation_id: str, server_round: int, attempt: int, outcomes: Sequence[Outcome],
                          message: str) -> str:
    lines = [f"# {federation_id}: round {server_round}, attempt {attempt + 1} failed", "", message, "",
             "| hospital | status | reason |", "| --- | --- | --- |",
             *[f"| {o.hospital} | {o.status} | {o.reason} |" for o in outcomes]]
    return "\n".join(lines)


def data_fingerprints(results: Sequence[HospitalResult], pooled: Pooled, secure: bool) -> dict[str, str]:
    """Tags of what the hospitals reported of their data this round: training sample counts and the
    class histogram of their validation split (the confusion matrix's row sums). Under secure
    aggregation only the sums exist, and the tags say so."""
    def histogram(cm: Any) -> str:
        cm = np.asarray(cm)
        return json.dumps(cm.sum(axis=1).astype(int).tolist()) if cm.size else "[]"

    if secure:
        return {"primia.data.scope": "secure sums over the round's hospitals (no hospital's own counts)",
                "primia.data.sum.train_samples": str(pooled.num_examples),
                "primia.data.sum.val_class_histogram": histogram(pooled.confusion if pooled.confusion is not None
                                                                 else [])}
    tags = {"primia.data.scope": "per hospital, as each reported in the clear"}
    for r in results:
        tags[f"primia.data.{r.hospital}.train_samples"] = str(r.num_examples)
        tags[f"primia.data.{r.hospital}.val_class_histogram"] = histogram(r.val_confusion)
    return tags
