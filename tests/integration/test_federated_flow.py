"""Two federated rounds against real Prefect, MLflow and S3 servers; what each of them holds after."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from infra import stack
from primia import runtime
from primia.config import SecureAggregationConfig, load_settings, parse_federation_config
from primia.store import weights as wcodec
from primia.store.checkpoints import CheckpointStore
from primia.store.s3 import ObjectStore
from tests.integration.conftest import federation_raw, round_one_gap

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def federated(live_stack: stack.StackState, federation_dirs: Path) -> dict[str, Any]:
    from flows.federated_training import federated_training

    cfg = parse_federation_config(federation_raw(federation_dirs, "it-fed", rounds=2))
    return federated_training(cfg)


def test_summary(federated: dict[str, Any]) -> None:
    assert federated["mode"] == "federated" and federated["selected_round"] in (0, 1, 2)
    assert 0.0 <= federated["test"]["roc_auc"] <= 1.0
    assert len(federated["timings"]) == 2


def test_mlflow_has_per_round_metrics_and_no_secrets(federated: dict[str, Any]) -> None:
    s = load_settings()
    client = MlflowClient(s.mlflow.tracking_uri)
    run = client.get_run(federated["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_mcc")] == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_mcc")) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    # under secure aggregation only sums exist: no hospital's own loss or sample count is logged
    assert client.get_metric_history(run.info.run_id, "h2.train_loss") == []
    samples = client.get_metric_history(run.info.run_id, "train_samples")
    assert [m.step for m in samples] == [1, 2] and samples[0].value > 0
    assert run.data.params["model.name"] == "small_cnn" and run.data.params["hospitals"] == "h1,h2,h3"
    secrets = runtime.secrets()
    everything = str(run.data.params) + str(run.data.tags)
    assert secrets and not any(sec in everything for sec in secrets)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc.png", "plots/curves.png"} <= arts


def test_checkpoints_in_s3(federated: dict[str, Any]) -> None:
    store = runtime.checkpoints("it-fed")
    assert store.committed_rounds() == [0, 1, 2]
    keys = {o.key for o in store.store.list("federations/it-fed/")}
    for r in (0, 1, 2):
        for name in ("global.safetensors", "strategy.json", "rng.json", "round.json"):
            assert f"federations/it-fed/rounds/{r:05d}/{name}.enc" in keys
        assert f"federations/it-fed/rounds/{r:05d}/manifest.json" in keys
    for r in (1, 2):  # secure aggregation (the default): masked vectors and the unmasked mean, no update
        prefix = f"federations/it-fed/rounds/{r:05d}/"
        assert not [k for k in keys if k.startswith(prefix + "updates/")]
        assert prefix + "secagg/mean.safetensors.enc" in keys
        vectors = sorted(k.rsplit("/", 1)[-1] for k in keys if k.startswith(prefix + "secagg/") and "/vectors/" in k)
        assert vectors == ["h1.bin.enc", "h2.bin.enc", "h3.bin.enc"]
    fresh = CheckpointStore(store.store, "it-fed", store.ring)
    assert "global.safetensors" in fresh.verify_round(2)
    assert "head.weight" in fresh.get_weights(fresh.latest().ref("global.safetensors"))  # type: ignore[union-attr]


def test_round_zero_carries_the_securely_pooled_input_normalisation(
    federated: dict[str, Any], federation_dirs: Path,
) -> None:
    import numpy as np

    from primia.data.statistics import local_moments, mean_std
    from primia.federation.hospital import load_local_data

    cfg = parse_federation_config(federation_raw(federation_dirs, "it-fed", rounds=2))
    mean, std = mean_std(local_moments(np.concatenate([load_local_data(h, cfg).train.images for h in cfg.hospitals])))
    store = runtime.checkpoints("it-fed")
    for r in (0, 2):  # set before round 1, carried unchanged by every aggregation
        w = store.get_weights(store.load_round(r).ref("global.safetensors"))
        assert float(w["input_mean"]) == pytest.approx(mean, abs=1e-3) and float(w["input_std"]) == pytest.approx(
            std, abs=1e-3)
    assert abs(std - 1.0) > 0.1  # not the identity
    client = MlflowClient(load_settings().mlflow.tracking_uri)
    assert client.get_metric_history(federated["mlflow_run_id"], "input_std")[0].value == pytest.approx(std, abs=1e-3)


def test_no_plaintext_weights_in_any_bucket(federated: dict[str, Any]) -> None:
    store = runtime.checkpoints("it-fed")
    latest = store.latest()
    assert latest is not None
    needles = []
    mean = store.find_object(latest.round, "secagg/mean.safetensors")
    assert mean is not None
    for weights in (store.get_weights(latest.ref("global.safetensors")), wcodec.decode(mean)):
        for tensor in weights.values():
            raw = tensor.tobytes()
            if len(raw) >= 64:
                needles.append(raw[:64])
                needles.append(raw[len(raw) // 2 : len(raw) // 2 + 64])
    assert len(needles) >= 8
    s = load_settings()
    admin = stack.admin_settings(Path(s.home))  # the operator reads every bucket; the coordinator cannot
    scanned = 0
    for bucket in (s.s3.bucket, "primia-mlflow"):
        raw_store = ObjectStore(admin, bucket)
        for info in raw_store.list(""):
            blob = raw_store.get(info.key)
            scanned += 1
            assert not any(n in blob for n in needles), f"plaintext weights found in s3://{bucket}/{info.key}"
    assert scanned > 20


def test_prefect_run_and_round_table(federated: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def fetch() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with get_client() as client:
            def by_key(key: str) -> ArtifactFilter:
                return ArtifactFilter(key=ArtifactFilterKey(any_=[key]))

            return (await client.read_flow_runs(), await client.read_task_runs(),
                    await client.read_artifacts(artifact_filter=by_key("it-fed-rounds")),
                    await client.read_artifacts(artifact_filter=by_key("it-fed-round-summary")))

    runs, task_runs, arts, summaries = asyncio.run(fetch())
    fed_runs = [r for r in runs if r.name == "it-fed"]
    assert fed_runs and fed_runs[0].state_type.value == "COMPLETED"
    assert len(arts) == 2 and arts[0].type == "table"
    assert "h1" in str(arts[0].data) and "in the sum" in str(arts[0].data)
    assert all(row["samples"] is None and row["val_mcc_incoming"] is None for row in json.loads(str(arts[0].data)))
    assert all("secure aggregation ON: SecAgg, threshold 2 of 3" in str(a.description) for a in arts)
    assert "in the sum: h1, h2, h3" in str(summaries[0].data)
    h1 = [t for t in task_runs if t.name == "h1-round-1" and t.flow_run_id == fed_runs[0].id]
    assert h1 and "hospital:h1" in h1[0].tags
    assert len(summaries) == 2 and "round" in str(summaries[0].data) and "mcc" in str(summaries[0].data)


def test_secure_aggregation_matches_the_plaintext_run_with_the_same_seeds(
    federated: dict[str, Any], federation_dirs: Path,
) -> None:
    from flows.federated_training import federated_training

    raw = federation_raw(federation_dirs, "it-fed-plain", rounds=2)
    raw["secure_aggregation"] = {"enabled": False}
    plain = federated_training(parse_federation_config(raw))
    for metric in ("mcc", "roc_auc", "balanced_accuracy"):
        assert federated["last_round_test"][metric] == pytest.approx(plain["last_round_test"][metric], abs=0.03)
    # the aggregation's quantization alone: one round from the same start (no normalisation pass, whose
    # own quantization would change the inputs and so the training)
    for fid, secure in (("it-q-secure", True), ("it-q-plain", False)):
        raw = federation_raw(federation_dirs, fid, rounds=1)
        raw["data"]["normalize"], raw["secure_aggregation"] = "none", {"enabled": secure}
        federated_training(parse_federation_config(raw))
    assert round_one_gap("it-q-secure", "it-q-plain") <= SecureAggregationConfig().quantization_bound + 1e-6


def test_centralized_flow(live_stack: stack.StackState, federation_dirs: Path) -> None:
    from flows.centralized_training import centralized_training

    cfg = parse_federation_config(federation_raw(federation_dirs, "it-cen", rounds=1))
    summary = centralized_training(cfg)
    assert summary["mode"] == "centralized" and summary["selected_round"] == 1
    client = MlflowClient(load_settings().mlflow.tracking_uri)
    assert [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "test_mcc")] == [1]


def test_fedadam_state_travels_in_checkpoints(live_stack: stack.StackState, federation_dirs: Path) -> None:
    from flows.federated_training import federated_training
    from primia.federation.checkpointing import load_strategy_state

    raw = federation_raw(federation_dirs, "it-fedadam", rounds=2)
    raw["strategy"] = {"name": "fedadam", "server_lr": 0.05}
    federated_training(parse_federation_config(raw))
    store = runtime.checkpoints("it-fedadam")
    assert "strategy.safetensors" in store.load_round(2).manifest["objects"]
    state = load_strategy_state(CheckpointStore(store.store, "it-fedadam", store.ring), 2)
    assert state.step == 2 and any(k.startswith("v/") for k in state.arrays)


def test_round_completed_events(federated: dict[str, Any]) -> None:
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=["primia.round.completed"]),
                      resource=EventResourceFilter(id=["primia.federation.it-fed"]))
    deadline, events = time.monotonic() + 20, []
    while time.monotonic() < deadline:  # events reach the server asynchronously
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events  # the server caps limit at 50
        if len(events) >= 2:
            break
        time.sleep(0.5)
    rounds = sorted(e.payload["round"] for e in events)
    assert rounds == [1, 2]
    latest = max(events, key=lambda e: e.payload["round"])
    assert latest.payload["checkpoint"]["key"] == "federations/it-fed/rounds/00002/global.safetensors.enc"
    assert latest.payload["hospitals"] == ["h1", "h2", "h3"]
