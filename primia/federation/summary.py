"""The end-of-run summary of a training flow (federated or centralized), as plain data."""

from __future__ import annotations

import statistics
from typing import Any

from primia.config import FederationConfig
from primia.federation.coordinator import Evaluation, Selection

CURVE_METRICS = ("mcc", "roc_auc", "balanced_accuracy")


def summarize(
    cfg: FederationConfig, mode: str, run_id: str, selection: Selection, evaluations: dict[int, Evaluation],
    timings: list[dict[str, float]], mlflow_url: str,
) -> dict[str, Any]:
    """Pick the selected round's test metrics; the selected round is the best validation MCC."""
    rounds = sorted(evaluations)
    chosen = selection.best_round if selection.best_round in evaluations else rounds[-1]
    ref = selection.best_ref
    return {
        "mode": mode,
        "federation_id": cfg.federation_id,
        "mlflow_run_id": run_id,
        "mlflow_url": mlflow_url,
        "selected_round": chosen,
        "selected_val_mcc": selection.history.get(chosen),
        "test": evaluations[chosen].metrics,
        "last_round_test": evaluations[rounds[-1]].metrics,
        "checkpoint": {"bucket": ref.bucket, "key": ref.key, "digest": ref.digest} if ref else None,
        "curves": {m: [evaluations[r].metrics[m] for r in rounds] for m in CURVE_METRICS},
        "val_mcc": [selection.history.get(r) for r in rounds],
        "round_s_median": statistics.median(t["round_s"] for t in timings) if timings else None,
        "timings": timings,
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    t = summary["test"]
    lines = [
        f"# {summary['federation_id']} ({summary['mode']})",
        f"Selected round **{summary['selected_round']}** by validation MCC "
        f"({summary['selected_val_mcc'] if summary['selected_val_mcc'] is not None else 'n/a'}).",
        "",
        "| metric | test |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" for k, v in t.items()],
        "",
        f"MLflow run: {summary['mlflow_url']}",
    ]
    if summary["checkpoint"]:
        lines.append(f"Checkpoint: s3://{summary['checkpoint']['bucket']}/{summary['checkpoint']['key']}")
    return "\n".join(lines)
