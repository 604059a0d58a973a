"""federated-training: rounds of local training at every hospital, FedAvg, evaluation, tracking.

Round r: hospitals validate global model r-1 and train on it (concurrent tasks) -> FedAvg into
global model r (checkpointed) -> test evaluation and reporting run in the background while the
next round trains. Model selection by pooled validation MCC, as PriMIA.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, tags
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from primia import progress
from primia.config import FederationConfig
from primia.federation.coordinator import Selection, pooled_validation
from primia.messages import CheckpointRef, HospitalResult
from tasks.coordinator import aggregate_updates, evaluate_global, find_resume_point, initialize_global_model
from tasks.hospital import local_training
from tasks.reporting import record_round
from tasks.tracking import finish_tracking, start_tracking


@flow(name="federated-training", flow_run_name="{config.federation_id}", persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=16))  # type: ignore[arg-type]  # Prefect stub
def federated_training(config: FederationConfig) -> dict[str, Any]:
    cfg = config
    resume = find_resume_point(cfg)
    if resume is None:
        run_id = start_tracking(cfg, mode="federated")
        global_ref, selection, first = initialize_global_model(cfg, run_id), Selection(), 1
    else:  # continue from the last committed round, in the same MLflow run
        run_id = start_tracking(cfg, mode="federated", resume_run_id=resume.run_id)
        global_ref, selection, first = resume.global_ref, resume.selection, resume.round + 1
    evaluations, records, timings = {}, [], []
    progress.report("start", total=cfg.rounds, mode="federated", completed=first - 1)
    for server_round in range(first, cfg.rounds + 1):
        started = time.perf_counter()
        results = [f.result() for f in _dispatch(cfg, server_round, global_ref)]
        validation = pooled_validation(results)
        selection.offer(server_round - 1, validation["val_mcc"], global_ref)
        global_ref = aggregate_updates(cfg, server_round, global_ref, results, selection, run_id)
        evaluations[server_round] = evaluate_global.submit(cfg, global_ref)
        timing = {"round_s": time.perf_counter() - started, "local_s_max": max(r.local_s for r in results)}
        timings.append(timing)
        records.append(record_round.submit(  # type: ignore[call-overload]  # Prefect resolves the future
            run_id, cfg.federation_id, server_round, results, validation, evaluations[server_round], timing,
            server_round - 1))
    final = [f.result() for f in _dispatch(cfg, global_ref.round + 1, global_ref, train=False)]
    selection.offer(final[0].round - 1, pooled_validation(final)["val_mcc"], global_ref)
    if selection.best_round not in evaluations and selection.best_ref is not None:  # selected before a resume
        evaluations[selection.best_round] = evaluate_global.submit(cfg, selection.best_ref)
    _wait(records)
    return finish_tracking(cfg, run_id, selection, {r: f.result() for r, f in evaluations.items()}, timings)


def _dispatch(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef,
              train: bool = True) -> list[PrefectFuture[HospitalResult]]:
    """One concurrent local-training task per hospital, tagged with the hospital's name."""
    futures = []
    for h in cfg.hospitals:
        with tags(f"hospital:{h.name}"):
            futures.append(local_training.submit(h, server_round, global_ref, cfg, train=train))
    return futures


def _wait(futures: list[PrefectFuture[Any]]) -> None:
    for f in futures:
        f.result()
