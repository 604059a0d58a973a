"""Tasks that report a round: MLflow metrics (step = round) and the Prefect round table artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from primia import progress, runtime
from primia.audit.record import artifact_key
from primia.federation.coordinator import Evaluation
from primia.federation.policy import Outcome, accepted_results
from primia.federation.report import (
    data_fingerprints,
    failed_round_markdown,
    round_markdown,
    round_metrics,
    round_table,
)
from primia.federation.rounds import RoundAnswers
from primia.privacy import budget


@task(name="record-round", cache_policy=NO_CACHE, persist_result=False, task_run_name="record-round-{server_round}")
def record_round(
    run_id: str, federation_id: str, server_round: int, answers: RoundAnswers, validation: dict[str, float],
    evaluation: Evaluation, timing: dict[str, float], validation_step: int,
) -> dict[str, float]:
    """Log the round's metrics; validation scores are logged at the step of the model they scored."""
    outcomes = answers.outcomes
    secure = answers.secure.summary if answers.secure else "secure aggregation OFF"
    metrics = round_metrics(accepted_results(outcomes), answers.pooled, evaluation, timing,
                            per_hospital=answers.secure is None)
    metrics["hospitals_accepted"] = float(len(accepted_results(outcomes)))
    metrics["hospitals_not_accepted"] = float(len(outcomes) - len(accepted_results(outcomes)))
    metrics["secure_aggregation"] = float(answers.secure is not None)
    reports = budget.reported(accepted_results(outcomes))
    if reports:  # each hospital's epsilon as it reports it, and the federation's (the largest)
        metrics["epsilon"] = max(r["epsilon"] for r in reports.values())
        metrics |= {f"epsilon_{h}": r["epsilon"] for h, r in reports.items()}
    tracker = runtime.tracker(run_id)
    tracker.log_metrics(metrics, step=server_round)
    tracker.set_tags(data_fingerprints(accepted_results(outcomes), answers.pooled, answers.secure is not None))
    if validation:
        runtime.tracker(run_id).log_metrics(validation, step=validation_step)
    audit = "" if runtime.settings().audit.after_round == "off" else \
        f"; privacy audit: artifact `{artifact_key(federation_id, server_round)}`"
    create_table_artifact(
        table=round_table(outcomes), key=f"{federation_id}-rounds",
        description=f"**{federation_id}**, round {server_round}: test MCC {evaluation.metrics['mcc']:.3f}, "
                    f"ROC-AUC {evaluation.metrics['roc_auc']:.3f}; {timing['round_s']:.2f} s; {secure}{audit}",
    )
    create_markdown_artifact(round_markdown(federation_id, server_round, outcomes, answers.pooled, validation,
                                            evaluation, timing, secure),
                             key=f"{federation_id}-round-summary")
    progress.report("round", round=server_round, metrics=evaluation.metrics)
    return {"round": float(server_round)} | metrics


def record_failed_round(run_id: str, federation_id: str, server_round: int, attempt: int, outcomes: list[Outcome],
                        message: str) -> None:
    """A round attempt below quorum: the table and summary say who was missing and why."""
    create_table_artifact(table=round_table(outcomes), key=f"{federation_id}-rounds",
                          description=f"**{federation_id}**, round {server_round}: FAILED, {message}")
    create_markdown_artifact(failed_round_markdown(federation_id, server_round, attempt, outcomes, message),
                             key=f"{federation_id}-round-summary")
    runtime.tracker(run_id).log_metrics({"failed_round_attempts": float(attempt + 1)}, step=server_round)


def record_stop(run_id: str, federation_id: str, server_round: int, reason: str) -> None:
    """Training stopped before `server_round` for the privacy budget: said in the round summary, a tag
    and the run's metrics (the last committed model stays the one selection picks from)."""
    create_markdown_artifact(f"# {federation_id}: stopped before round {server_round}\n\n{reason}\n\n"
                             f"Round {server_round} was not run; the models committed so far stay as they are.",
                             key=f"{federation_id}-round-summary")
    tracker = runtime.tracker(run_id)
    tracker.set_tags({"primia.stopped": reason[:4000]})
    tracker.log_metrics({"stopped_before_round": float(server_round)}, step=server_round)
    progress.report("stopped", round=server_round, reason=reason)
