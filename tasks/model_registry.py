"""Tasks of the MLflow registry: release the selected model (challenger), gate it, re-check champions."""

from __future__ import annotations

import re
import time
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from primia import runtime
from primia.audit.record import round_verdict_tags
from primia.config import FederationConfig
from primia.federation.coordinator import evaluate, load_test_set
from primia.messages import CheckpointRef
from primia.registry import card, promotion
from primia.registry.policy import load_policy
from primia.registry.release import Release, register
from primia.store.digest import from_entry
from primia.store.weights import Weights
from primia.tracking.provenance import code_version
from primia.training.confidence import bootstrap_ci

TRAINING_COMPLETED = "primia.training.completed"


def client() -> MlflowClient:
    tracker = runtime.tracker()  # sets the login in the environment, as MLflow's clients read it
    import mlflow

    mlflow.set_tracking_uri(tracker.tracking_uri)  # the fluent API (log_model, load_model) uses it
    return tracker.client


def model_spec(cfg: FederationConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
    """What the pyfunc rebuilds the network and its preprocessing from."""
    return {"model": cfg.model.model_dump(mode="json"), "image_size": cfg.data.image_size,
            "class_names": list(class_names)}


@task(name="release-model", cache_policy=NO_CACHE, persist_result=False)
def release_model(cfg: FederationConfig, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The selected global model into the training run and the registry (alias `challenger`), with its
    model card; then the `primia.training.completed` event that promotion starts from."""
    ck = summary.get("checkpoint")
    if not ck:
        return None
    started = time.perf_counter()
    mlflow_client, run_id = client(), summary["mlflow_run_id"]
    store = runtime.checkpoints(cfg.federation_id)
    ref = CheckpointRef(ck["bucket"], ck["key"], from_entry(ck), int(summary["selected_round"]))
    weights: Weights = store.get_weights(ref)
    test = load_test_set(cfg)
    evaluation = evaluate(cfg, weights, test)
    run = mlflow_client.get_run(run_id)
    rows = [{k: float(v) for k, v in r.items()} for r in summary.get("rows", [])]
    release = Release(
        name=cfg.federation_id, federation_id=cfg.federation_id, run_id=run_id, round=ref.round, rounds=cfg.rounds,
        checkpoint=ref, weights=weights, spec=model_spec(cfg, test.class_names),
        example_images=test.images[:2], privacy=store.load_round(ref.round).manifest.get("privacy"),
        ci=bootstrap_ci(evaluation.labels, evaluation.probs, seed=cfg.seed), test_size=len(test),
        secure=card.secure_section(cfg.secure_aggregation, rows), data=card.data_section(run.data.tags),
        code=code_version(), audit=round_verdict_tags(run.data.tags, ref.round))
    version = register(mlflow_client, release)
    if not release.audit:  # an audit that recorded its verdict while this registered found no version to tag
        for key, value in round_verdict_tags(mlflow_client.get_run(run_id).data.tags, ref.round).items():
            mlflow_client.set_model_version_tag(release.name, version, key, value)
    emit_event(event=TRAINING_COMPLETED,
               resource={"prefect.resource.id": f"primia.model.{release.name}", "prefect.resource.name": release.name},
               payload={"model_name": release.name, "version": version, "federation": cfg.federation_id,
                        "run_id": run_id, "round": ref.round})
    return {"model_name": release.name, "version": version, "model_uri": f"models:/{release.name}/{version}",
            **release.timings, "release_s": time.perf_counter() - started}


def _artifact_key(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:60] + "-promotion"


def _report(decision: promotion.Decision) -> dict[str, Any]:
    create_markdown_artifact(decision.markdown(), key=_artifact_key(decision.name),
                             description=f"{decision.name} v{decision.version}: {decision.action}")
    return {"model_name": decision.name, "version": decision.version, "action": decision.action,
            "reasons": decision.reasons(), "promote_s": decision.seconds,
            "gates": {g.name: {"passed": g.passed, "reason": g.reason, **g.figures} for g in decision.gates}}


def _store_of(mlflow_client: MlflowClient, name: str, version: str) -> Any:
    mv = promotion.model_version(mlflow_client, name, version)
    return runtime.checkpoints(mv.tags.get("primia.federation_id", name))


@task(name="gate-version", cache_policy=NO_CACHE, persist_result=False, task_run_name="gate-{model_name}-v{version}")
def gate_version(model_name: str, version: str, policy_path: str = "") -> dict[str, Any]:
    mlflow_client = client()
    mv = promotion.model_version(mlflow_client, model_name, version)
    test = load_test_set(promotion.config_of(mlflow_client, mv))
    decision = promotion.promote(mlflow_client, model_name, version, load_policy(policy_path or _policy()), test,
                                 _store_of(mlflow_client, model_name, version))
    return _report(decision)


@task(name="recheck-champion", cache_policy=NO_CACHE, persist_result=False, task_run_name="recheck-{model_name}")
def recheck_champion(model_name: str, policy_path: str = "") -> dict[str, Any]:
    mlflow_client = client()
    champion = promotion.champion_of(mlflow_client, model_name)
    if champion is None:
        return {"model_name": model_name, "version": "", "action": "no champion", "reasons": "", "gates": {}}
    decision = promotion.recheck(mlflow_client, model_name, load_policy(policy_path or _policy()),
                                 lambda mv: load_test_set(promotion.config_of(mlflow_client, mv)),
                                 _store_of(mlflow_client, model_name, str(champion.version)))
    return _report(decision)


@task(name="federation-models", cache_policy=NO_CACHE, persist_result=False)
def federation_models() -> list[str]:
    """Every registered model primia released (the nightly re-check looks at each one's champion)."""
    return sorted(m.name for m in client().search_registered_models(max_results=1000)
                  if "primia.federation_id" in dict(m.tags or {}))


def _policy() -> str:
    p = runtime.settings().promotion.policy
    return str(p) if p else ""

