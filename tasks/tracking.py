"""Tasks that open and close the MLflow run of a training flow."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from prefect import runtime as prefect_runtime
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from primia import progress, runtime
from primia.config import FederationConfig, config_to_params
from primia.federation.coordinator import Evaluation, Selection
from primia.federation.summary import summarize, summary_markdown
from primia.tracking.plots import confusion_figure, curves_figure, roc_figure


@task(name="start-tracking", cache_policy=NO_CACHE, persist_result=False)
def start_tracking(cfg: FederationConfig, mode: str, resume_run_id: str | None = None) -> str:
    if resume_run_id:
        return runtime.tracker().resume(resume_run_id)
    tags = {"primia.mode": mode, "primia.federation_id": cfg.federation_id,
            "prefect.flow_run_id": str(prefect_runtime.flow_run.id or "")}
    return runtime.tracker().start(f"{cfg.federation_id}-{mode}", config_to_params(cfg), tags)


@task(name="finish-tracking", cache_policy=NO_CACHE, persist_result=False)
def finish_tracking(
    cfg: FederationConfig, run_id: str, selection: Selection, evaluations: dict[int, Evaluation],
    timings: list[dict[str, float]], mode: str = "federated", stopped: str = "",
    privacy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    tracker = runtime.tracker(run_id)
    summary = summarize(cfg, mode, run_id, selection, evaluations, timings, tracker.url())
    if stopped:
        summary["stopped"] = stopped
    if privacy is not None:  # the federation's guarantee as it stands at the end (the last manifest says it too)
        summary["privacy"] = privacy
    best = evaluations[summary["selected_round"]]
    tracker.log_metrics({f"selected_test_{k}": v for k, v in best.metrics.items()}, step=summary["selected_round"])
    tracker.set_tags({"primia.selected_round": str(summary["selected_round"])})
    for fig, path in (
        (confusion_figure(best.labels, best.probs, best.class_names, f"{mode}: round {summary['selected_round']}"),
         "plots/confusion_matrix.png"),
        (roc_figure(best.labels, best.probs, best.class_names, f"{mode}: ROC, round {summary['selected_round']}"),
         "plots/roc.png"),
        (curves_figure(summary["curves"], f"{mode}: test metrics per round"), "plots/curves.png"),
    ):
        tracker.log_figure(fig, path)
        plt.close(fig)
    tracker.log_dict(summary, "summary.json")
    tracker.finish()
    create_markdown_artifact(summary_markdown(summary), key=f"{cfg.federation_id}-{mode}-summary")
    progress.report("done", summary=summary)
    return summary
