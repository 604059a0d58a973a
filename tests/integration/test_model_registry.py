"""MLflow as the sign-off desk, against the real MLflow server (SQLite, artifacts in SeaweedFS S3): the
run's structure, the released pyfunc and its card, and promotion behind the three gates."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from infra import stack
from infra.processes import free_ports
from primia import runtime
from primia.config import parse_federation_config
from primia.federation import coordinator as core
from primia.messages import CheckpointRef
from tasks.model_registry import client as registry_client
from tests.distributed_agents import triggered_coordinator
from tests.integration.conftest import federation_raw

pytestmark = pytest.mark.integration
FID = "it-registry"
EPS = 100.0  # the federation's budget (the most the config allows); the test policies allow what it spent or not (0.5)


def _policy(tmp_path: Path, name: str, **gates: dict[str, Any]) -> str:
    base: dict[str, Any] = {"quality": {"metric": "mcc", "tolerance": 0.02, "floor": -1.0},
                            "privacy": {"max_epsilon": EPS, "max_delta": 1e-5, "require_dp": True},
                            "audit": {"required": True}}
    for k, v in gates.items():
        base[k] = base[k] | v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return str(path)




@pytest.fixture(scope="module")
def coordinator_worker(live_stack: stack.StackState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """prefect.yaml deployed with its triggers enabled and the coordinator's pinned worker running, before
    the module's federation trains: the end of training starts promote-model through the automation."""
    # this module sets audit verdicts itself (test_privacy_audit audits); later trainings start no promotion
    with triggered_coordinator(tmp_path_factory.mktemp("coordinator-worker") / "worker.log", "coordinator-registry",
                               paused=("privacy-audit/privacy-audit",),
                               pause_after=("promote-model/promote-model",)) as log:
        yield log


@pytest.fixture(scope="module")
def registry_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Larger, cleaner hospitals than the shared ones: validation splits big enough that a trained round's
    pooled validation MCC beats the initial model's every time."""
    from primia.data.synthetic import make_synthetic, write_image_folder

    root = tmp_path_factory.mktemp("registry-hospitals")
    for k, site in enumerate(["h1", "h2", "h3", "test"]):
        write_image_folder(make_synthetic(96, 2, 32, seed=40 + k, noise=0.05), root / site)
    return root


@pytest.fixture(scope="module")
def trained(coordinator_worker: Path, registry_dirs: Path) -> dict[str, Any]:
    from flows.federated_training import federated_training

    raw = federation_raw(registry_dirs, FID, rounds=2)
    # weak noise under a loose budget for 77 samples a hospital, so that the federation learns and a trained
    # round (not the initial model) is selected; the policies below allow its epsilon or not
    raw["rounds"] = 3
    raw["privacy"] = {"mode": "sample", "target_epsilon": EPS, "delta": 1e-5, "max_grad_norm": 1.0,
                      "noise_multiplier": 0.5}
    raw["training"] = {"batch_size": 16, "lr": 0.03, "local_epochs": 2}
    summary = federated_training(parse_federation_config(raw))
    assert summary["selected_round"] >= 1, summary["val_mcc"]
    return summary


@pytest.fixture(scope="module")
def mlc(trained: dict[str, Any]) -> MlflowClient:
    return registry_client()


def test_run_structure(trained: dict[str, Any], mlc: MlflowClient) -> None:
    run = mlc.get_run(trained["mlflow_run_id"])
    exp = mlc.get_experiment(run.info.experiment_id)
    assert exp.name == f"primia/{FID}" and exp.artifact_location.startswith("mlflow-artifacts:")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["primia.git.dirty"] in ("true", "false")
    assert tags["primia.version"] and tags["primia.data.scope"].startswith("secure sums")
    assert int(tags["primia.data.sum.train_samples"]) > 0
    assert sum(json.loads(tags["primia.data.sum.val_class_histogram"])) > 0
    assert run.data.params["privacy.mode"] == "sample"
    assert [m.step for m in mlc.get_metric_history(run.info.run_id, "epsilon")] == [1, 2, 3]
    paths = {a.path for a in mlc.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "rounds.csv", "privacy.json", "summary.json", "plots", "model_card"} <= paths
    rounds = mlc.download_artifacts(run.info.run_id, "rounds.csv")
    lines = Path(rounds).read_text().splitlines()
    assert lines[0].startswith("round,") and [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    models = mlc.search_logged_models([exp.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]


def test_end_of_training_triggers_promotion_through_the_deployment(trained: dict[str, Any], mlc: MlflowClient,
                                                                   coordinator_worker: Path) -> None:
    """The promote-model run is created by the automation (not by the training flow) and run by the
    coordinator's pinned worker, with the default policy: the epsilon spent is above its budget of 8, and no
    audit yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from tests.distributed_agents import final_state

    v = trained["registry"]["version"]
    deadline, runs = time.monotonic() + 120, []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and not runs:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["promote-model"])))
                    if r.parameters.get("model_name") == FID]
            time.sleep(0.5)
    assert len(runs) == 1, "no promote-model run was triggered"
    run = runs[0]
    assert run.created_by is not None and run.created_by.type == "AUTOMATION"
    assert str(run.parameters["version"]) == v
    state = final_state(run.id, 180)
    assert state.is_completed(), (state, coordinator_worker.read_text()[-3000:])
    tags = _tags(mlc, v)
    assert tags["primia.promotion.decision"] == "not promoted" and _champion(mlc) is None
    assert tags["primia.gate.privacy"] == "FAIL" and tags["primia.gate.audit"] == "FAIL"


def test_version_is_challenger_with_card_and_checkpoint(trained: dict[str, Any], mlc: MlflowClient) -> None:
    reg = trained["registry"]
    assert reg["promotion"] == "off"  # the test session leaves promotion to the tests
    mv = mlc.get_model_version_by_alias(FID, "challenger")
    assert str(mv.version) == reg["version"] and mv.run_id == trained["mlflow_run_id"]
    ck = trained["checkpoint"]
    assert (mv.tags["primia.checkpoint.bucket"], mv.tags["primia.checkpoint.key"],
            mv.tags["primia.checkpoint.digest"]) == (ck["bucket"], ck["key"], ck["digest"])
    assert 0 < float(mv.tags["primia.privacy.epsilon"]) <= EPS and mv.tags["primia.privacy.mode"] == "sample"
    assert mv.tags["primia.audit.verdict"] == "not audited"
    assert "[" in mv.tags["primia.test.mcc"]  # estimate [low, high]
    card = mv.description
    for needle in ("Privacy model card", "epsilon", "SecAgg+", "95% CI", "not audited", ck["digest"],
                   "Hospitals in each round's sum: r1: 3, r2: 3, r3: 3"):
        assert needle in card, needle
    model = mlflow.models.get_model_info(f"models:/{FID}/{mv.version}")
    assert [c["name"] for c in model.signature.inputs.to_dict()] == ["image"]
    assert model.signature.inputs.to_dict()[0]["type"] == "binary"


def _test_files(root: Path) -> list[Path]:
    return [f for c in ("class0", "class1") for f in sorted((root / "test" / c).iterdir())]


def test_alias_predicts_raw_images_as_the_coordinator_evaluates(trained: dict[str, Any], registry_dirs: Path,
                                                                mlc: MlflowClient) -> None:
    cfg = parse_federation_config(federation_raw(registry_dirs, FID))
    ck = trained["checkpoint"]
    store = runtime.checkpoints(FID)
    ref = CheckpointRef(ck["bucket"], ck["key"], ck["digest"], trained["selected_round"])
    expected = core.evaluate(cfg, store.get_weights(ref), core.load_test_set(cfg)).probs
    model = mlflow.pyfunc.load_model(f"models:/{FID}@challenger")
    files = _test_files(registry_dirs)
    with pytest.raises(Exception, match="a served model never reads its host's files"):
        model.predict(pd.DataFrame({"image": [str(files[0])]}))
    model.unwrap_python_model().allow_paths = True  # in-process: the caller's own files
    by_path = model.predict(pd.DataFrame({"image": [str(f) for f in files]}))
    by_bytes = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
    assert list(by_path.columns) == ["class0", "class1"]
    np.testing.assert_allclose(by_path.to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(by_bytes.to_numpy(), expected, atol=1e-6)
    with pytest.raises(Exception, match="not a PNG, JPEG or DICOM"):
        model.predict(pd.DataFrame({"image": [b"not an image at all, long enough"]}))


def _tags(mlc: MlflowClient, version: str) -> dict[str, str]:
    return dict(mlc.get_model_version(FID, version).tags)


def _champion(mlc: MlflowClient) -> str | None:
    try:
        return str(mlc.get_model_version_by_alias(FID, "champion").version)
    except MlflowException:
        return None


def test_promotion_gates(trained: dict[str, Any], mlc: MlflowClient, tmp_path: Path) -> None:
    from flows.promote_model import promote_model

    v = trained["registry"]["version"]
    # each gate failing in turn: nothing moves, the reason is tagged (the audit has not run yet)
    out = promote_model(FID, v, _policy(tmp_path, "lenient", audit={"required": True}))
    assert out["action"] == "not promoted" and _champion(mlc) is None
    assert _tags(mlc, v)["primia.gate.audit"] == "FAIL" and "not audited" in _tags(mlc, v)["primia.gate.audit.reason"]
    mlc.set_model_version_tag(FID, v, "primia.audit.verdict", "PASS")  # as the privacy audit records its verdict
    out = promote_model(FID, v, _policy(tmp_path, "strict-quality", quality={"floor": 0.999}))
    assert out["action"] == "not promoted" and _champion(mlc) is None
    assert _tags(mlc, v)["primia.gate.quality"] == "FAIL" and "below the floor" in out["reasons"]
    out = promote_model(FID, v, _policy(tmp_path, "strict-privacy", privacy={"max_epsilon": 0.5}))
    assert out["action"] == "not promoted" and _champion(mlc) is None
    assert "above the policy's budget" in _tags(mlc, v)["primia.gate.privacy.reason"]
    # every gate passes: champion moves, every figure is tagged
    out = promote_model(FID, v, _policy(tmp_path, "lenient"))
    assert out["action"] == "promoted" and _champion(mlc) == v
    tags = _tags(mlc, v)
    assert all(tags[f"primia.gate.{g}"] == "PASS" for g in ("quality", "privacy", "audit"))
    assert 0 < float(tags["primia.gate.privacy.epsilon"]) <= EPS and "primia.gate.quality.score" in tags
    assert "**promoted**" in mlc.get_model_version(FID, v).description
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:  # the decisions as a Prefect artifact, newest first
        shown = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{FID}-promotion"])))
    assert any("not promoted" in str(a.data) and "below the floor" in str(a.data) for a in shown)
    assert any(": promoted" in str(a.data) for a in shown)
    # the nightly re-check under a lowered budget demotes it, with the reason
    out = promote_model(FID, "", _policy(tmp_path, "lowered", privacy={"max_epsilon": 0.5}))
    assert [r["action"] for r in out["rechecked"] if r["model_name"] == FID] == ["demoted"]
    assert _champion(mlc) is None and "above the policy's budget" in _tags(mlc, v)["primia.demoted"]
    promote_model(FID, v, _policy(tmp_path, "lenient"))
    assert _champion(mlc) == v


def test_privacy_gate_refuses_a_version_whose_checkpoint_is_not_the_signed_one(
        trained: dict[str, Any], mlc: MlflowClient, tmp_path: Path) -> None:
    """A registry entry pointed at another checkpoint (or with other weights) has no signed privacy record."""
    from flows.promote_model import promote_model

    v = trained["registry"]["version"]
    good = _tags(mlc, v)["primia.checkpoint.digest"]
    mlc.set_model_version_tag(FID, v, "primia.checkpoint.digest", "0" * 64)
    try:
        out = promote_model(FID, v, _policy(tmp_path, "lenient"))
    finally:
        mlc.set_model_version_tag(FID, v, "primia.checkpoint.digest", good)
    assert out["action"] == "not promoted" and "no signed privacy record" in out["reasons"]
    from primia.errors import PrimiaError

    with pytest.raises(PrimiaError, match=f"'{FID}' has no version '999' \\(versions: 1\\)"):
        promote_model(FID, "999", _policy(tmp_path, "lenient"))  # a clear error, not MLflow's traceback


def test_privacy_gate_refuses_registry_weights_that_are_not_the_checkpoints(
        trained: dict[str, Any], mlc: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed manifest names the checkpoint, but the registry's copy must also be those weights."""
    from flows.promote_model import promote_model

    store = runtime.checkpoints(FID)
    real = store.get_weights

    def other_weights(ref: CheckpointRef) -> dict[str, np.ndarray]:
        return {k: w + 0.01 if w.dtype.kind == "f" else w for k, w in real(ref).items()}

    monkeypatch.setattr(store, "get_weights", other_weights)
    out = promote_model(FID, trained["registry"]["version"], _policy(tmp_path, "lenient"))
    assert out["action"] == "not promoted" and "no signed privacy record" in out["reasons"]


def test_mlflow_models_serve_answers(trained: dict[str, Any], registry_dirs: Path, mlc: MlflowClient,
                                    tmp_path: Path) -> None:
    from flows.promote_model import promote_model

    v = trained["registry"]["version"]
    if _champion(mlc) is None:  # run alone: promote it as test_promotion_gates does (audit recorded PASS)
        mlc.set_model_version_tag(FID, v, "primia.audit.verdict", "PASS")
        promote_model(FID, v, _policy(tmp_path, "lenient"))
    assert _champion(mlc) == v
    port = free_ports(1)[0]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": runtime.settings().mlflow.tracking_uri or ""}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([f"{bindir}/mlflow", "models", "serve", "-m", f"models:/{FID}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        files = _test_files(registry_dirs)[:3]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(f.read_bytes()).decode()] for f in files]}}).encode()
        answer = None
        for _ in range(120):
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-2000:]
        preds = answer["predictions"]
        assert len(preds) == 3 and all(abs(p["class0"] + p["class1"] - 1) < 1e-5 for p in preds)
        local = mlflow.pyfunc.load_model(f"models:/{FID}@champion").predict(
            pd.DataFrame({"image": [f.read_bytes() for f in files]}))
        # a request naming a file on the serving host is refused, not read: MLflow refuses it as base64 in
        # dataframe_split; in the "inputs" format it reaches the model as bytes, which are never a path
        for probe in ({"dataframe_split": {"columns": ["image"], "data": [[str(files[0])]]}},
                      {"inputs": {"image": [str(files[0])]}}):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(probe).encode(),
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert refused.value.code == 400, probe
        np.testing.assert_allclose([[p["class0"], p["class1"]] for p in preds], local.to_numpy(), atol=1e-6)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def _secrets(home: Path) -> list[bytes]:
    """Every secret of the stack and the coordinator: S3 keys (its own and MLflow's), logins, master keys
    (raw, base64, hex), the signing key (raw and as configured)."""
    from cryptography.hazmat.primitives import serialization

    stackdir = home / "stack"
    values = [v for f in ("credentials.json", "admin.json", "mlflow-service.json")
              for k, v in json.loads((stackdir / f).read_text()).items() if k not in ("mlflow_username", "actions")
              and isinstance(v, str) and len(v) >= 8]
    values += runtime.secrets()
    ring = runtime.keyring()
    raw = list(ring.keks.values())
    if ring.signing_private is not None:
        raw.append(ring.signing_private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                      serialization.NoEncryption()))
    out = [v.encode() for v in values] + raw
    out += [base64.b64encode(r) for r in raw] + [r.hex().encode() for r in raw]
    return [s for s in out if len(s) >= 8]


def test_nothing_in_mlflow_holds_a_secret(trained: dict[str, Any], mlc: MlflowClient, live_stack: stack.StackState,
                                          tmp_path: Path) -> None:
    run = mlc.get_run(trained["mlflow_run_id"])
    v = trained["registry"]["version"]
    mv = mlc.get_model_version(FID, v)
    texts = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(sorted(run.data.metrics)),
             json.dumps(dict(mv.tags)), mv.description or "", json.dumps(dict(mlc.get_registered_model(FID).tags)),
             json.dumps(mlc.get_experiment(run.info.experiment_id).tags)]
    for lm in mlc.search_logged_models([run.info.experiment_id]):
        texts += [json.dumps(lm.tags), json.dumps(lm.params)]
    files = [p for p in Path(mlc.download_artifacts(run.info.run_id, "", str(tmp_path / "run"))).rglob("*")
             if p.is_file()]
    files += [p for p in Path(mlflow.artifacts.download_artifacts(f"models:/{FID}/{v}",
                                                                  dst_path=str(tmp_path / "model"))).rglob("*")
              if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "rounds.csv", "privacy.json", "MLmodel", "weights.safetensors", "spec.json",
            "input_example.json", "model_code.py"} <= names, names
    assert not [n for n in names if n.endswith((".pkl", ".pickle"))], names  # models from code: no pickle
    blobs = [t.encode() for t in texts] + [p.read_bytes() for p in files]
    secrets = _secrets(Path(os.environ["PRIMIA_HOME"]))
    assert len(secrets) >= 6
    leaks = [(i, s[:4]) for i, b in enumerate(blobs) for s in secrets if s in b]
    assert not leaks, leaks


def test_a_failed_run_ends_failed_not_running(live_stack: stack.StackState, federation_dirs: Path,
                                              tmp_path: Path) -> None:
    from flows.federated_training import federated_training
    from primia.errors import RoundFailedError

    raw = federation_raw(federation_dirs, "it-registry-fails", rounds=1)
    raw["hospitals"][2]["data"]["path"] = str(tmp_path / "missing")  # hospital 3 fails: below the quorum of 3
    raw["policy"] = {"min_hospitals": 3, "round_retries": 0}
    with pytest.raises(RoundFailedError):
        federated_training(parse_federation_config(raw))
    mlc = registry_client()
    exp = mlc.get_experiment_by_name("primia/it-registry-fails")
    runs = mlc.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "RoundFailedError" in runs[0].data.tags["primia.error"]


# ---------------------------------------------------------------------- encrypted inference of the registered model
def _uri(trained: dict[str, Any]) -> str:
    """The version this module trained (aliases move as the promotion tests run)."""
    return f"models:/{FID}/{trained['registry']['version']}"


def _infer(uri: str, *args: str) -> dict[str, Any]:
    from typer.testing import CliRunner

    from primia.cli import app

    result = CliRunner().invoke(app, ["infer", "--json", "--model", uri, *args])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_encrypted_inference_of_the_registered_model_agrees_with_its_pyfunc(trained: dict[str, Any],
                                                                           registry_dirs: Path,
                                                                           mlc: MlflowClient) -> None:
    """`primia infer --encrypted` (model owner and dealer spawned, the model loaded from the registry by alias)
    against the plain pyfunc on the same files."""
    files = _test_files(registry_dirs)[::6]
    enc = _infer(_uri(trained), "--encrypted", "--compare", "--batch", "8", *map(str, files))
    assert enc["model"] == _uri(trained) and enc["sessions"] == 2
    assert enc["comparison"]["agreement"] == 1.0 and enc["comparison"]["max_logit_error"] < 0.05, enc["comparison"]
    plain = _infer(_uri(trained), *map(str, files))
    model = mlflow.pyfunc.load_model(_uri(trained))
    expected = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]})).to_numpy()
    np.testing.assert_allclose([p["probabilities"] for p in plain["predictions"]], expected, atol=1e-6)
    np.testing.assert_allclose([p["probabilities"] for p in enc["predictions"]], expected, atol=0.01)


def test_the_encrypted_inference_flow_writes_the_hospitals_predictions(trained: dict[str, Any], registry_dirs: Path,
                                                                       tmp_path: Path) -> None:
    import csv

    from flows.encrypted_inference import encrypted_inference

    out = tmp_path / "predictions.csv"
    summary = encrypted_inference([str(registry_dirs / "test")], _uri(trained), str(out), batch=48, compare=True)
    rows = list(csv.DictReader(out.open()))
    assert summary["images"] == len(rows) == 96 and summary["sessions"] == 2
    assert {r["prediction"] for r in rows} <= {"class0", "class1"}
    assert summary["comparison"]["agreement"] >= 0.99 and summary["comparison"]["max_logit_error"] < 0.05


def _serve(role: str, name: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "primia.cli", "smpc", "serve", "--role", role, "--name", name,
                             "--listen", f"127.0.0.1:{port}", "--timeout", "30", *extra],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _listening(port: int, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 120) -> None:
    import socket

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()}")


def test_a_hospital_calls_the_roster_services_and_a_revoked_one_is_refused(trained: dict[str, Any],
                                                                           registry_dirs: Path,
                                                                           tmp_path: Path) -> None:
    """The deployment path: service keys made and put on the signed roster under their roles, `primia smpc
    serve` for the model owner and the dealer, `primia infer --encrypted` from an enrolled hospital; after
    the hospital is revoked (a new signed version) the running servers refuse it."""
    from typer.testing import CliRunner

    from primia.cli import app

    run = CliRunner()
    for name, role in (("enc-mo", "model-owner"), ("enc-dealer", "dealer")):
        for args in (["smpc", "keygen", name], ["federation", "add-service", name, "--role", role]):
            result = run.invoke(app, args)
            assert result.exit_code == 0, result.output
    hospital = run.invoke(app, ["hospital", "register", "enc-h", "--keys-dir", str(tmp_path / "enc-h")])
    assert hospital.exit_code == 0, hospital.output  # registering signs and publishes a version with the services
    assert {"enc-mo", "enc-dealer"} <= set(runtime.roster().services)
    mo_port, dealer_port = free_ports(2)
    procs = [_serve("dealer", "enc-dealer", dealer_port, tmp_path / "dealer.log"),
             _serve("model-owner", "enc-mo", mo_port, tmp_path / "mo.log", "--model", _uri(trained),
                    "--dealer", f"enc-dealer=127.0.0.1:{dealer_port}")]
    try:
        _listening(dealer_port, procs[0], tmp_path / "dealer.log")
        _listening(mo_port, procs[1], tmp_path / "mo.log")
        files = [str(f) for f in _test_files(registry_dirs)[::12]]
        remote = ["--encrypted", "--model-owner", f"enc-mo=127.0.0.1:{mo_port}", "--dealer",
                  f"enc-dealer=127.0.0.1:{dealer_port}", "--hospital", "enc-h", "--keys-dir", str(tmp_path / "enc-h")]
        out = _infer(_uri(trained), *remote, "--compare", *files)
        assert out["comparison"]["agreement"] == 1.0 and out["comparison"]["max_logit_error"] < 0.05
        before = tmp_path / "roster-before-revocation.json"
        before.write_bytes((runtime.settings().home / "authority" / "roster.json").read_bytes())
        import shutil

        shutil.copytree(tmp_path / "enc-h", tmp_path / "enc-h-before")  # its pin has not seen the revocation
        assert run.invoke(app, ["hospital", "revoke", "enc-h"]).exit_code == 0
        # the hospital itself, on the new roster, no longer calls; on the old one it tries, and the running
        # model owner (which re-read the signed roster) refuses it
        refused = run.invoke(app, ["infer", "--json", "--model", _uri(trained), *remote, files[0]])
        assert refused.exit_code == 2 and "'enc-h' is not a party" in refused.output, refused.output
        remote[-1] = str(tmp_path / "enc-h-before")
        refused = run.invoke(app, ["infer", "--json", "--model", _uri(trained), *remote, "--roster",
                                   str(before), files[0]])
        assert refused.exit_code == 2 and "enc-mo" in refused.output, refused.output
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
