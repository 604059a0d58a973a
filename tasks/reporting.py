"""Tasks that report a round: MLflow metrics (step = round) and the Prefect round table artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from primia import progress, runtime
from primia.federation.coordinator import Evaluation
from primia.federation.report import round_markdown, round_metrics, round_table


@task(name="record-round", cache_policy=NO_CACHE, persist_result=False, task_run_name="record-round-{server_round}")
def record_round(
    run_id: str, federation_id: str, server_round: int, results: list[Any], validation: dict[str, float],
    evaluation: Evaluation, timing: dict[str, float], validation_step: int,
) -> dict[str, float]:
    """Log the round's metrics; validation scores are logged at the step of the model they scored."""
    metrics = round_metrics(results, validation, evaluation, timing)
    runtime.tracker(run_id).log_metrics(metrics, step=server_round)
    if validation:
        runtime.tracker(run_id).log_metrics(validation, step=validation_step)
    create_table_artifact(
        table=round_table(results), key=f"{federation_id}-rounds",
        description=f"**{federation_id}**, round {server_round}: test MCC {evaluation.metrics['mcc']:.3f}, "
                    f"ROC-AUC {evaluation.metrics['roc_auc']:.3f}; {timing['round_s']:.2f} s",
    )
    create_markdown_artifact(round_markdown(federation_id, server_round, results, validation, evaluation, timing),
                             key=f"{federation_id}-round-summary")
    progress.report("round", round=server_round, metrics=evaluation.metrics)
    return metrics
