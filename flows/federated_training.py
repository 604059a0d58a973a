"""federated-training: rounds of local training at every hospital, aggregation, evaluation, tracking.

Round r: the round's hospitals validate global model r-1 and train on it -> the strategy aggregates
the accepted updates into global model r (checkpointed) -> test evaluation and reporting run in the
background while the next round trains. Model selection by pooled validation MCC, as PriMIA.

Same flow in both modes (PRIMIA_MODE): embedded runs each hospital as a concurrent task on data
named in the config (a simulation on one machine); distributed starts each hospital's own
`local-training` deployment on its agent and accepts only answers signed by registered hospitals.
The round policy (sampling, quorum, timeout, retries) applies to both.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from primia import progress, runtime
from primia.config import FederationConfig
from primia.errors import ConfigError, RoundFailedError
from primia.federation.coordinator import Selection, pooled_validation
from primia.federation.policy import ACCEPTED, DROPPED, Outcome, accepted_results, check_quorum, roster, sample
from primia.federation.secure_round import RoundAnswers, annotate, plan, start_of
from primia.messages import CheckpointRef, HospitalResult
from primia.secure.inmemory import identities as simulated_identities
from primia.secure.protocol import SecAggAbort
from tasks.coordinator import (
    aggregate_updates,
    evaluate_global,
    find_resume_point,
    initialize_global_model,
    normalization_from,
)
from tasks.dispatch import dispatch_round
from tasks.hospital import local_training
from tasks.registry import list_hospitals
from tasks.reporting import record_failed_round, record_round
from tasks.secure import secure_aggregation
from tasks.tracking import finish_tracking, start_tracking

EMBEDDED_MAX_HOSPITALS = 56  # simulated hospitals in one round: each a thread of the flow's task runner


@flow(name="federated-training", flow_run_name="{config.federation_id}", persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=EMBEDDED_MAX_HOSPITALS + 8))  # type: ignore[arg-type]  # Prefect stub
def federated_training(config: FederationConfig) -> dict[str, Any]:
    cfg = config
    roster_of_round(cfg)  # fail before anything is stored if the hospitals cannot make a quorum
    resume = find_resume_point(cfg)
    if resume is None:
        run_id = start_tracking(cfg, mode="federated")
        normalization = input_normalization(cfg, run_id) if cfg.data.normalize == "federated" else None
        global_ref, selection, first = initialize_global_model(cfg, run_id, normalization), Selection(), 1
    else:  # continue from the last committed round, in the same MLflow run
        run_id = start_tracking(cfg, mode="federated", resume_run_id=resume.run_id)
        global_ref, selection, first = resume.global_ref, resume.selection, resume.round + 1
    evaluations, records, timings = {}, [], []
    progress.report("start", total=cfg.rounds, mode="federated", completed=first - 1)
    for server_round in range(first, cfg.rounds + 1):
        started = time.perf_counter()
        answers = run_round(cfg, server_round, global_ref, run_id)
        results = accepted_results(answers.outcomes)
        validation = pooled_validation(results)
        selection.offer(server_round - 1, validation["val_mcc"], global_ref)
        global_ref = aggregate_updates(cfg, server_round, global_ref, results, selection, run_id,
                                       answers.secure.mean if answers.secure else None)
        evaluations[server_round] = evaluate_global.submit(cfg, global_ref)
        timing = {"round_s": time.perf_counter() - started, "local_s_max": max(r.local_s for r in results)}
        timings.append(timing)
        records.append(record_round.submit(  # type: ignore[call-overload]  # Prefect resolves the future
            run_id, cfg.federation_id, server_round, answers.outcomes, validation, evaluations[server_round], timing,
            server_round - 1, answers.secure.summary if answers.secure else "secure aggregation OFF"))
    final = accepted_results(run_round(cfg, global_ref.round + 1, global_ref, run_id, train=False).outcomes)
    selection.offer(global_ref.round, pooled_validation(final)["val_mcc"], global_ref)
    if selection.best_round not in evaluations and selection.best_ref is not None:  # selected before a resume
        evaluations[selection.best_round] = evaluate_global.submit(cfg, selection.best_ref)
    _wait_all(records)
    return finish_tracking(cfg, run_id, selection, {r: f.result() for r, f in evaluations.items()}, timings)


def input_normalization(cfg: FederationConfig, run_id: str) -> tuple[float, float]:
    """Before round 1: the pooled pixel mean and std of every hospital's training images, through
    secure aggregation (PriMIA's federated normalisation, here sample-weighted)."""
    answers = run_round(cfg, 0, None, run_id, train=False, stats=True)
    return normalization_from(cfg, answers)


def roster_of_round(cfg: FederationConfig) -> tuple[str, ...]:
    """Re-read each round in distributed mode, so a revoked hospital takes part in no later round."""
    mode = runtime.settings().mode
    if mode == "embedded":
        return roster(cfg, mode)
    records = list_hospitals()
    return roster(cfg, mode, [r.hospital for r in records if r.status == "active"],
                  [r.hospital for r in records if r.status != "active"])


def run_round(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, run_id: str,
              train: bool = True, stats: bool = False) -> RoundAnswers:
    """Ask the round's sample of hospitals; retry below quorum (or after an aborted secure
    aggregation) as the policy says, then fail clearly."""
    policy, logger = cfg.policy, get_run_logger()
    for attempt in range(policy.round_retries + 1):
        chosen = sample(roster_of_round(cfg), policy, cfg.seed, server_round, attempt)
        answers = _dispatch(cfg, server_round, global_ref, chosen, train, attempt, stats)
        try:
            if answers.aborted:
                raise RoundFailedError(answers.aborted)
            check_quorum(answers.outcomes, policy, server_round, attempt)
            return answers
        except RoundFailedError as exc:
            record_failed_round(run_id, cfg.federation_id, server_round, attempt, answers.outcomes, str(exc))
            if attempt == policy.round_retries:
                after = f"resume after round {global_ref.round}" if global_ref else "start it afresh"
                raise RoundFailedError(f"{exc}; nothing was committed for round {server_round}: run the federation "
                                       f"again to {after}") from None
            logger.warning("%s; trying again in %g s", exc, policy.retry_wait_s)
            time.sleep(policy.retry_wait_s)
    raise AssertionError("unreachable")


def _dispatch(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, chosen: list[str],
              train: bool, attempt: int, stats: bool = False) -> RoundAnswers:
    round_plan = None
    if (train or stats) and cfg.secure_aggregation.enabled:  # validation-only passes send nothing to protect
        start = start_of(runtime.checkpoints(cfg.federation_id), None if stats else global_ref)
        round_plan = plan(cfg, server_round, chosen, start, cfg.policy.round_timeout_s)
    if runtime.settings().mode == "distributed":
        return dispatch_round(cfg, server_round, global_ref, chosen, train, attempt, round_plan, stats)
    return _embedded(cfg, server_round, global_ref, chosen, train, round_plan, stats)


def _embedded(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, chosen: list[str],
              train: bool, round_plan: dict[str, Any] | None, stats: bool) -> RoundAnswers:
    """One concurrent local-training task per hospital, tagged with its name; late ones are dropped.
    Under secure aggregation the simulated hospitals sign with keys made for this round."""
    started, futures = time.monotonic(), {}
    if round_plan is not None and len(chosen) > EMBEDDED_MAX_HOSPITALS:  # they all wait at once for rosters
        raise ConfigError(f"embedded mode runs secure aggregation with at most {EMBEDDED_MAX_HOSPITALS} hospitals "
                          f"a round (threads), this round has {len(chosen)}: lower policy.sample_fraction or run "
                          f"distributed")
    by_name = {h.name: h for h in cfg.hospitals}
    signers, verify = simulated_identities(chosen)
    for name in chosen:
        with tags(f"hospital:{name}"):
            futures[name] = local_training.submit(by_name[name], server_round, global_ref, cfg, train=train,
                                                  secagg=round_plan, keys=(signers[name], verify), stats=stats)
    secure, aborted = None, ""
    if round_plan is not None:
        def gone() -> set[str]:
            return {n for n, f in futures.items() if f.wrapped_future.done()}  # type: ignore[attr-defined]

        try:
            secure = secure_aggregation(cfg, server_round, round_plan, global_ref, verify, started, gone)
        except SecAggAbort as exc:
            aborted = str(exc)
    left = max(0.0, cfg.policy.round_timeout_s - (time.monotonic() - started))
    done = wait(list(futures.values()), timeout=left).done
    outcomes = [_embedded_outcome(name, f, f in done, time.monotonic() - started, cfg.policy.round_timeout_s)
                for name, f in futures.items()]
    return RoundAnswers(annotate(outcomes, secure), secure, aborted)


def _embedded_outcome(name: str, future: PrefectFuture[HospitalResult], done: bool, seconds: float,
                      timeout_s: float) -> Outcome:
    if not done:
        return Outcome(name, DROPPED, f"no answer within {timeout_s:g} s (policy.round_timeout_s)", seconds=seconds)
    future.wait()  # done already; this only settles its final state
    state = future.state
    if not state.is_completed():
        return Outcome(name, DROPPED, f"{state.name}: {state.message or ''}".strip(), seconds=seconds)
    return Outcome(name, ACCEPTED, "ok", future.result(), seconds=seconds)


def _wait_all(futures: list[PrefectFuture[Any]]) -> None:
    for f in futures:
        f.result()
