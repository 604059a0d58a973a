"""centralized-training: the comparison baseline, one model on the union of the hospitals' data.

Same model, seed, split and budget as federated-training: rounds x local_epochs passes over
every training sample; selection by validation MCC on the pooled validation data.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from primia import progress
from primia.config import FederationConfig
from primia.federation.coordinator import Selection, pooled_validation
from primia.federation.policy import ACCEPTED, Outcome
from primia.federation.rounds import Pooled, RoundAnswers
from tasks.centralized import centralized_epoch, prepare_centralized
from tasks.coordinator import evaluate_global
from tasks.reporting import record_round
from tasks.tracking import ends_run, finish_tracking, start_tracking


@flow(name="centralized-training", flow_run_name="{config.federation_id}-centralized", persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]  # Prefect stub
def centralized_training(config: FederationConfig) -> dict[str, Any]:
    cfg = config
    run_id = start_tracking(cfg, mode="centralized")
    with ends_run(run_id):  # FAILED or KILLED, never left RUNNING
        return _train(cfg, run_id)


def _train(cfg: FederationConfig, run_id: str) -> dict[str, Any]:
    trainer = prepare_centralized(cfg)
    selection, evaluations, records, timings = Selection(), {}, [], []
    progress.report("start", total=trainer.epochs, mode="centralized")
    for epoch in range(1, trainer.epochs + 1):
        started = time.perf_counter()
        result, ref = centralized_epoch(trainer, epoch, selection.best_round)
        validation = pooled_validation(np.asarray(result.val_confusion))
        selection.offer(epoch, validation["val_mcc"], ref)
        evaluations[epoch] = evaluate_global.submit(cfg, ref)
        timing = {"round_s": time.perf_counter() - started, "local_s_max": result.local_s}
        timings.append(timing)
        outcome = Outcome(result.hospital, ACCEPTED, "ok", result, result.local_s)
        pooled = Pooled(result.num_examples, result.train_loss, np.asarray(result.val_confusion))
        records.append(record_round.submit(  # type: ignore[call-overload]  # Prefect resolves the future
            run_id, f"{cfg.federation_id}-centralized", epoch, RoundAnswers([outcome], pooled=pooled),
            validation, evaluations[epoch], timing, epoch))
    rows = [f.result() for f in records]
    return finish_tracking(cfg, run_id, selection, {e: f.result() for e, f in evaluations.items()}, timings,
                           mode="centralized", rows=rows)
