"""federated-training: rounds of local training at every hospital, aggregation, evaluation, tracking.

Round r: the round's hospitals validate global model r-1 and train on it -> the strategy aggregates
the accepted updates into global model r (checkpointed) -> test evaluation and reporting run in the
background while the next round trains. Model selection by pooled validation MCC, as PriMIA.
After the last round the selected model is released to the MLflow registry as `challenger`, and
promote-model gates it (a sub-flow in embedded mode; the deployment's event trigger otherwise). The
MLflow run ends FAILED or KILLED if training does not finish.

After each round's commit the privacy audit attacks what the coordinator could see (a sub-flow in
embedded mode; the privacy-audit deployment's event trigger otherwise); a FAILed audit stops training
before the next round when the audit policy says so.

Same flow in both modes (PRIMIA_MODE): embedded runs each hospital as a concurrent task on data
named in the config (a simulation on one machine); distributed starts each hospital's own
`local-training` deployment on its agent and accepts only answers signed by the signed roster's
hospitals.
The round policy (sampling, quorum, timeout, retries) applies to both.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows.privacy_audit import privacy_audit
from flows.promote_model import promote_model
from primia import progress, runtime
from primia.config import FederationConfig
from primia.errors import BudgetSpentError, ConfigError, RoundFailedError
from primia.federation.checkpointing import ResumePoint
from primia.federation.coordinator import Selection, pooled_validation
from primia.federation.policy import DROPPED, Outcome, accepted_results, check_quorum, roster, sample
from primia.federation.rounds import RoundAnswers
from primia.messages import CheckpointRef
from primia.privacy import budget
from tasks.audit import audit_halt_reason
from tasks.coordinator import (
    aggregate_updates,
    evaluate_global,
    find_resume_point,
    initialize_global_model,
    normalization_from,
    remember_final_validation,
)
from tasks.model_registry import release_model
from tasks.reporting import record_failed_round, record_round, record_stop
from tasks.rounds import ask_hospitals, reachable
from tasks.tracking import close_tracking, ends_run, finish_tracking, start_tracking

EMBEDDED_MAX_HOSPITALS = 56  # simulated hospitals in one round: each a thread of the flow's task runner


@flow(name="federated-training", flow_run_name="{config.federation_id}", persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=EMBEDDED_MAX_HOSPITALS + 8))  # type: ignore[arg-type]  # Prefect stub
def federated_training(config: FederationConfig) -> dict[str, Any]:
    cfg = config
    roster_of_round(cfg)  # fail before anything is stored if the hospitals cannot make a quorum
    resume = find_resume_point(cfg)
    # continue from the last committed round in the same MLflow run; it ends FAILED or KILLED if this does
    run_id = start_tracking(cfg, mode="federated", resume_run_id=resume.run_id if resume else None)
    with ends_run(run_id):
        summary = train(cfg, run_id, resume)
        release = release_model(cfg, summary)
        close_tracking(run_id)
    if release:
        summary["registry"] = release | promote_after_training(release)
    return summary


def promote_after_training(release: dict[str, Any]) -> dict[str, Any]:
    """Embedded: promote-model as a sub-flow. Distributed: the deployment's event trigger starts it from
    the `primia.training.completed` event the release emitted."""
    s = runtime.settings()
    via = s.promotion.after_training
    if via == "auto":
        via = "subflow" if s.mode == "embedded" else "trigger"
    if via != "subflow":
        return {"promotion": via}
    return {"promotion": promote_model(release["model_name"], release["version"])}


def audit_after_round(event: dict[str, Any]) -> None:
    """Embedded: privacy-audit as a sub-flow. Distributed: its deployment's event trigger starts it from
    the `primia.round.completed` event the commit emitted."""
    if audit_mode() == "subflow":
        privacy_audit(event)


def audit_mode() -> str:
    s = runtime.settings()
    via = s.audit.after_round
    return ("subflow" if s.mode == "embedded" else "trigger") if via == "auto" else via


def halted_by_audit(run_id: str) -> str:
    """A FAILed audit stops training when the audit policy says halt_on_fail."""
    if audit_mode() == "off":
        return ""
    reason = audit_halt_reason(run_id)
    return f"privacy audit failed, {reason}; the audit policy halts training" if reason else ""


def train(cfg: FederationConfig, run_id: str, resume: ResumePoint | None) -> dict[str, Any]:
    if resume is None:
        normalization = input_normalization(cfg, run_id) if cfg.data.normalize == "federated" else None
        global_ref, selection, first = initialize_global_model(cfg, run_id, normalization), Selection(), 1
    else:
        global_ref, selection, first = resume.global_ref, resume.selection, resume.round + 1
    evaluations, records, timings = {}, [], []
    reports: dict[str, dict[str, float]] = {}  # each hospital's latest privacy report
    stopped = ""
    progress.report("start", total=cfg.rounds, mode="federated", completed=first - 1)
    for server_round in range(first, cfg.rounds + 1):
        started = time.perf_counter()
        stopped = budget.stop_reason(cfg, reports, cfg.policy.min_hospitals, len(roster_of_round(cfg))) \
            or halted_by_audit(run_id)
        known = global_ref.round in selection.history  # scored already (a finished run resumed): not again
        try:
            if stopped:
                raise BudgetSpentError(stopped)
            answers = run_round(cfg, server_round, global_ref, run_id, validate=not known)
        except BudgetSpentError as exc:  # not run: training stops, the last committed model stays selectable
            stopped = str(exc)
            record_stop(run_id, cfg.federation_id, server_round, stopped)
            break
        results = accepted_results(answers.outcomes)
        reports |= budget.reported(results)
        validation = {} if known else pooled_validation(answers.pooled.confusion)
        if not known:
            selection.offer(server_round - 1, validation["val_mcc"], global_ref)
        global_ref, event = aggregate_updates(cfg, server_round, global_ref, answers, selection, run_id)
        audit_after_round(event)
        evaluations[server_round] = evaluate_global.submit(cfg, global_ref)
        timing = {"round_s": time.perf_counter() - started, "local_s_max": max(r.local_s for r in results)}
        timings.append(timing)
        records.append(record_round.submit(  # type: ignore[call-overload]  # Prefect resolves the future
            run_id, cfg.federation_id, server_round, answers, validation, evaluations[server_round], timing,
            server_round - 1))
    if global_ref.round not in selection.history:
        final = run_round(cfg, global_ref.round + 1, global_ref, run_id, train=False)
        selection.offer(global_ref.round, pooled_validation(final.pooled.confusion)["val_mcc"], global_ref)
        remember_final_validation(cfg, global_ref.round, selection)
    if selection.best_round not in evaluations and selection.best_ref is not None:  # selected before a resume
        evaluations[selection.best_round] = evaluate_global.submit(cfg, selection.best_ref)
    return finish_tracking(cfg, run_id, selection, {r: f.result() for r, f in evaluations.items()}, timings,
                           stopped=stopped, privacy=budget.statement(cfg, reports), rows=_wait_all(records),
                           close=False)


def input_normalization(cfg: FederationConfig, run_id: str) -> tuple[float, float]:
    """Before round 1: the pooled pixel mean and std of every hospital's training images, through
    secure aggregation (PriMIA's federated normalisation, here sample-weighted)."""
    answers = run_round(cfg, 0, None, run_id, train=False, stats=True)
    return normalization_from(cfg, answers)


def roster_of_round(cfg: FederationConfig) -> tuple[str, ...]:
    """Re-read each round in distributed mode from the signed roster, so a revoked hospital takes part
    in no later round."""
    mode = runtime.settings().mode
    if mode == "embedded":
        return roster(cfg, mode)
    hospitals = runtime.roster().hospitals
    return roster(cfg, mode, [h for h, e in hospitals.items() if e.status == "active"],
                  [h for h, e in hospitals.items() if e.status != "active"])


def run_round(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, run_id: str,
              train: bool = True, stats: bool = False, validate: bool = True) -> RoundAnswers:
    """Ask the round's sample of hospitals; retry below quorum (or after an aborted secure
    aggregation) as the policy says, then fail clearly."""
    policy, logger = cfg.policy, get_run_logger()
    for attempt in range(policy.round_retries + 1):
        chosen = sample(roster_of_round(cfg), policy, cfg.seed, server_round, attempt)
        chosen, offline = reachable(cfg, tuple(chosen))  # an agent that is offline is not asked or waited for
        if cfg.secure_aggregation.enabled and runtime.settings().mode == "embedded" \
                and len(chosen) > EMBEDDED_MAX_HOSPITALS:  # they all wait at once for rosters
            raise ConfigError(f"embedded mode runs secure aggregation with at most {EMBEDDED_MAX_HOSPITALS} "
                              f"hospitals a round (threads), this round has {len(chosen)}: lower "
                              f"policy.sample_fraction or run distributed")
        answers = ask_hospitals(cfg, server_round, global_ref, chosen, train, stats, tuple(offline), validate)
        answers = replace(answers, outcomes=answers.outcomes + [Outcome(h, DROPPED, why) for h, why in offline.items()])

        try:
            if answers.aborted:
                raise RoundFailedError(answers.aborted)
            check_quorum(answers.outcomes, policy, server_round, attempt)
            return answers
        except RoundFailedError as exc:
            record_failed_round(run_id, cfg.federation_id, server_round, attempt, answers.outcomes, str(exc))
            declined = [o.hospital for o in answers.outcomes if budget.declined_for_budget(o.reason)]
            if train and declined and len(chosen) + len(offline) - len(declined) < policy.min_hospitals:
                raise BudgetSpentError(f"{budget.DECLINED}: {', '.join(sorted(declined))} declined round "
                                       f"{server_round} (their budgets would pass); the rest cannot make the "
                                       f"quorum of {policy.min_hospitals}") from None
            if attempt == policy.round_retries:
                after = f"resume after round {global_ref.round}" if global_ref else "start it afresh"
                raise RoundFailedError(f"{exc}; nothing was committed for round {server_round}: run the federation "
                                       f"again to {after}") from None
            logger.warning("%s; trying again in %g s", exc, policy.retry_wait_s)
            time.sleep(policy.retry_wait_s)
    raise AssertionError("unreachable")


def _wait_all(futures: list[PrefectFuture[Any]]) -> list[Any]:
    return [f.result() for f in futures]
