"""Tasks that open and close the MLflow run of a training flow."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib.pyplot as plt
import yaml
from prefect import runtime as prefect_runtime
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from primia import progress, runtime
from primia.config import FederationConfig, config_to_params
from primia.federation.coordinator import Evaluation, Selection
from primia.federation.summary import summarize, summary_markdown
from primia.tracking.plots import confusion_figure, curves_figure, roc_figure
from primia.tracking.provenance import code_version

# How an interrupted run ends: cancelled by Prefect (SIGTERM), Ctrl-C or shutdown -> KILLED; else FAILED.
KILLED_BY = (KeyboardInterrupt, SystemExit, TerminationSignal, asyncio.CancelledError)


@task(name="start-tracking", cache_policy=NO_CACHE, persist_result=False)
def start_tracking(cfg: FederationConfig, mode: str, resume_run_id: str | None = None) -> str:
    if resume_run_id:
        return runtime.tracker().resume(resume_run_id)
    tags = {"primia.mode": mode, "primia.federation_id": cfg.federation_id,
            "prefect.flow_run_id": str(prefect_runtime.flow_run.id or ""), **code_version()}
    tracker = runtime.tracker()
    run_id = tracker.start(f"{cfg.federation_id}-{mode}", config_to_params(cfg), tags, cfg.federation_id)
    # the config as a file (its secrets, if any, masked by pydantic): what promotion re-reads the test set from
    tracker.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
    return run_id


@contextmanager
def ends_run(run_id: str) -> Iterator[None]:
    """The MLflow run never stays RUNNING: FAILED when training raises, KILLED when it is interrupted."""
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KILLED_BY) else "FAILED"
        try:
            tracker = runtime.tracker(run_id)
            tracker.set_tags({"primia.error": f"{type(exc).__name__}: {exc}"[:4000]})
            tracker.finish(status)
        except Exception:  # the tracking server may be what failed; the original error matters more
            pass
        raise


def rounds_csv(rows: list[dict[str, float]]) -> str:
    """The per-round table (one row per round, every metric logged for it) as CSV."""
    columns = sorted({k for r in rows for k in r} - {"round"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["round", *columns], restval="")
    writer.writeheader()
    for r in sorted(rows, key=lambda r: r["round"]):
        writer.writerow({"round": int(r["round"]), **{k: f"{v:.6g}" for k, v in r.items() if k != "round"}})
    return out.getvalue()


@task(name="finish-tracking", cache_policy=NO_CACHE, persist_result=False)
def finish_tracking(
    cfg: FederationConfig, run_id: str, selection: Selection, evaluations: dict[int, Evaluation],
    timings: list[dict[str, float]], mode: str = "federated", stopped: str = "",
    privacy: dict[str, Any] | None = None, rows: list[dict[str, float]] | None = None, close: bool = True,
) -> dict[str, Any]:
    """Selected-round metrics, plots, the summary, the round table and privacy record; the run is closed
    unless `close` is False (the federated flow releases the model into it first)."""
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
    if rows:
        summary["rows"] = rows
        tracker.log_text(rounds_csv(rows), "rounds.csv")
    if privacy is not None:
        tracker.log_dict(privacy, "privacy.json")
    if close:
        tracker.finish()
    create_markdown_artifact(summary_markdown(summary), key=f"{cfg.federation_id}-{mode}-summary")
    progress.report("done", summary=summary)
    return summary


@task(name="close-tracking", cache_policy=NO_CACHE, persist_result=False)
def close_tracking(run_id: str) -> None:
    runtime.tracker(run_id).finish()
