"""Tasks that run at the coordinator: resume point, initial model, aggregation and commit, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from primia import runtime
from primia.audit.event import ROUND_COMPLETED, round_event_payload
from primia.config import FederationConfig
from primia.federation import coordinator as core
from primia.federation.checkpointing import GLOBAL, ResumePoint, commit_round, load_strategy_state, resume_point
from primia.federation.checkpointing import remember_final_validation as remember
from primia.federation.policy import accepted_results
from primia.federation.rounds import RoundAnswers, input_normalization
from primia.federation.strategies import make_strategy
from primia.federation.strategy import StrategyState
from primia.messages import CheckpointRef
from primia.store.checkpoints import CheckpointStore


@task(name="resume-point", cache_policy=NO_CACHE, persist_result=False)
def find_resume_point(cfg: FederationConfig) -> ResumePoint | None:
    """The last committed round of this federation (verified), or None to start fresh."""
    return resume_point(runtime.checkpoints(cfg.federation_id), cfg)


@task(name="initialize-global-model", cache_policy=NO_CACHE, persist_result=False)
def initialize_global_model(cfg: FederationConfig, run_id: str,
                            normalization: tuple[float, float] | None = None) -> CheckpointRef:
    """Round 0: the seeded initial model, with the federation's input normalisation in its weights."""
    store = runtime.checkpoints(cfg.federation_id)
    committed = commit_round(store, cfg, 0, core.initial_weights(cfg, normalization), [], core.Selection(), run_id,
                             make_strategy(cfg.strategy), StrategyState())
    if normalization is not None:
        runtime.tracker(run_id).log_metrics({"input_mean": normalization[0], "input_std": normalization[1]}, step=0)
    return committed.ref(GLOBAL)


@task(name="input-normalization", cache_policy=NO_CACHE, persist_result=False)
def normalization_from(cfg: FederationConfig, answers: RoundAnswers) -> tuple[float, float]:
    """(mean, std) of the hospitals' pixels from the statistics pass before round 1."""
    return input_normalization(runtime.checkpoints(cfg.federation_id), answers)


@task(name="aggregate-and-commit", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="aggregate-round-{server_round}")
def aggregate_updates(
    cfg: FederationConfig, server_round: int, global_ref: CheckpointRef, answers: RoundAnswers,
    selection: core.Selection, run_id: str,
) -> tuple[CheckpointRef, dict[str, Any]]:
    """Aggregate the round's updates with the configured strategy (its state comes from the round the
    global model was committed with), commit the new global checkpoint, then apply retention.
    Under secure aggregation only the unmasked weighted mean exists: the strategy works from that."""
    store, strategy = runtime.checkpoints(cfg.federation_id), make_strategy(cfg.strategy)
    state = load_strategy_state(store, global_ref.round)
    current = store.get_weights(global_ref)
    secure_mean = answers.secure.mean if answers.secure else None
    results = accepted_results(answers.outcomes)
    if secure_mean is not None:
        new, state = strategy.aggregate_mean(server_round, current, store.get_weights(secure_mean), state)
    else:
        new, state = core.aggregate(strategy, server_round, current, results, runtime_mailbox(cfg), state)
    committed = commit_round(store, cfg, server_round, new, results, selection, run_id, strategy, state)
    store.apply_retention(cfg.checkpoints.keep_last, protect={selection.best_round})
    ref = committed.ref(GLOBAL)
    payload = round_event_payload(cfg.federation_id, server_round, ref, run_id, strategy.name,
                                  [r.hospital for r in results], answers.pooled.num_examples, secure_mean is not None)
    emit_event(  # what the per-round privacy audit starts from (its deployment's trigger, or the flow itself)
        event=ROUND_COMPLETED, payload=payload,
        resource={"prefect.resource.id": f"primia.federation.{cfg.federation_id}",
                  "prefect.resource.name": cfg.federation_id})
    return ref, payload


@task(name="remember-final-validation", cache_policy=NO_CACHE, persist_result=False)
def remember_final_validation(cfg: FederationConfig, server_round: int, selection: core.Selection) -> None:
    remember(runtime.checkpoints(cfg.federation_id), server_round, selection)


@task(name="evaluate-global", cache_policy=NO_CACHE, persist_result=False, task_run_name="evaluate-round-{ref.round}")
def evaluate_global(cfg: FederationConfig, ref: CheckpointRef) -> core.Evaluation:
    store = runtime.checkpoints(runtime.federation_of(ref))
    return core.evaluate(cfg, store.get_weights(ref), core.load_test_set(cfg))


def runtime_mailbox(cfg: FederationConfig) -> Callable[[str], CheckpointStore]:
    """Where plaintext updates are read from: each hospital's mailbox (its bucket in distributed mode)."""
    if runtime.settings().mode == "embedded":
        store = runtime.checkpoints(cfg.federation_id)
        return lambda _: store
    buckets = {h: e.bucket for h, e in runtime.roster().hospitals.items()}
    return lambda hospital: runtime.checkpoints(cfg.federation_id, buckets[hospital])
