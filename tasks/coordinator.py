"""Tasks that run at the coordinator: initial model, aggregation, evaluation on the held-out test set."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from primia import runtime
from primia.config import FederationConfig
from primia.federation import coordinator as core
from primia.federation.strategy import FedAvg
from primia.messages import CheckpointRef, HospitalResult


@task(name="initialize-global-model", cache_policy=NO_CACHE, persist_result=False)
def initialize_global_model(cfg: FederationConfig) -> CheckpointRef:
    return runtime.checkpoints(cfg.federation_id).put_weights(0, core.initial_weights(cfg))


@task(name="aggregate-updates", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="aggregate-round-{server_round}")
def aggregate_updates(
    cfg: FederationConfig, server_round: int, global_ref: CheckpointRef, results: list[HospitalResult]
) -> CheckpointRef:
    """FedAvg of the round's updates, written to the store as the new global checkpoint."""
    store = runtime.checkpoints(cfg.federation_id)
    new = core.aggregate(FedAvg(), server_round, store.get_weights(global_ref), results, store)
    return store.put_weights(server_round, new)


@task(name="evaluate-global", cache_policy=NO_CACHE, persist_result=False, task_run_name="evaluate-round-{ref.round}")
def evaluate_global(cfg: FederationConfig, ref: CheckpointRef) -> core.Evaluation:
    return core.evaluate(cfg, runtime.checkpoints(cfg.federation_id).get_weights(ref), core.load_test_set(cfg))
