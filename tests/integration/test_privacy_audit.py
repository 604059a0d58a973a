"""The per-round privacy audit against the real servers: as a sub-flow in embedded mode, started by the
privacy-audit deployment's event trigger otherwise, halting training on a FAIL when the policy says so,
and read by the promotion gate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from infra import stack
from primia import runtime
from primia.config import parse_federation_config
from tasks.model_registry import client as registry_client
from tests.distributed_agents import final_state, round_tables, triggered_coordinator
from tests.integration.conftest import federation_raw

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def audit_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from primia.data.synthetic import make_synthetic, write_image_folder

    root = tmp_path_factory.mktemp("audit-hospitals")
    for k, site in enumerate(["h1", "h2", "h3", "test"]):
        write_image_folder(make_synthetic(96, 2, 32, seed=40 + k, noise=0.05), root / site)  # learns: a trained
    # round is selected (the registry tests' sites)
    return root


def _raw(root: Path, fid: str, rounds: int = 2) -> dict[str, Any]:
    raw = federation_raw(root, fid, rounds=rounds)
    raw["privacy"] = {"mode": "sample", "target_epsilon": 50.0, "delta": 1e-5, "max_grad_norm": 1.0,
                      "noise_multiplier": 0.5}
    raw["training"] = {"batch_size": 16, "lr": 0.03, "local_epochs": 2}
    raw["audit"] = {"time_budget_s": 6, "steps": 60, "restarts": 1, "attack_images": 2}
    return raw


def _train(raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch, after_round: str,
           policy: Path | None = None) -> dict[str, Any]:
    from flows.federated_training import federated_training

    monkeypatch.setenv("PRIMIA_AUDIT__AFTER_ROUND", after_round)
    if policy is not None:
        monkeypatch.setenv("PRIMIA_AUDIT__POLICY", str(policy))
    runtime.settings.cache_clear()
    try:
        return federated_training(parse_federation_config(raw))
    finally:
        monkeypatch.undo()
        runtime.settings.cache_clear()


def _audit_runs(fid: str, want: int, timeout_s: float = 240) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline, runs = time.monotonic() + timeout_s, []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            audits = FlowFilter(name=FlowFilterName(any_=["privacy-audit"]))
            runs = [r for r in client.read_flow_runs(flow_filter=audits) if r.name.startswith(f"audit-{fid}-round-")]
            if len(runs) >= want:
                break
            time.sleep(0.5)
    return runs


def _check_round_records(mlc: MlflowClient, run_id: str, rounds: int) -> dict[str, str]:
    tags = mlc.get_run(run_id).data.tags
    verdicts = {r: tags.get(f"primia.audit.round.{r}.verdict") for r in range(1, rounds + 1)}
    assert set(verdicts.values()) <= {"PASS", "FAIL"}, verdicts
    for metric in ("audit_recon_ssim", "audit_recon_psnr", "audit_recon_rdlv", "audit_pass"):
        assert [m.step for m in mlc.get_metric_history(run_id, metric)] == list(range(1, rounds + 1)), metric
    for r in range(1, rounds + 1):
        files = {a.path for a in mlc.list_artifacts(run_id, f"audit/round-{r:04d}")}
        assert {f"audit/round-{r:04d}/reconstructions.png", f"audit/round-{r:04d}/verdict.json"} <= files
    return {str(r): v for r, v in verdicts.items() if v}


def test_embedded_rounds_are_audited_by_the_subflow(live_stack: stack.StackState, audit_dirs: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    fid = "it-audit-embedded"
    summary = _train(_raw(audit_dirs, fid), monkeypatch, "subflow")
    mlc = registry_client()
    verdicts = _check_round_records(mlc, summary["mlflow_run_id"], 2)
    assert len(verdicts) == 2
    verdict = json.loads(Path(mlc.download_artifacts(summary["mlflow_run_id"], "audit/round-0001/verdict.json"))
                         .read_text())
    figures = verdict["figures"]
    # both views were attacked (the mean of 3 updates under secure aggregation, and one hospital's) ...
    assert {"recon_aggregate_inverting_ssim", "recon_single_inverting_ssim"} <= set(figures)
    # ... the hospitals' membership audit ran where their data is, and what was cut is said
    assert 0 <= figures["mia_auc"] <= 1 and "mia_tpr_at_1pct_fpr" in figures
    assert any("reconstructed 2 of" in c for c in verdict["cut"]), verdict["cut"]
    assert "DP sample" in verdict["threat"] and "mean of 3 updates" in verdict["threat"]
    runs = _audit_runs(fid, 2, 5)
    assert len(runs) == 2 and all(r.parent_task_run_id is not None for r in runs)  # sub-flows of the training
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts()
    assert any(a.key == f"{fid}-round-1-audit" for a in art)
    descriptions: dict[int, str] = {}
    round_tables(fid, descriptions)  # each round's table names its audit
    assert f"privacy audit: artifact `{fid}-round-2-audit`" in descriptions[2]
    # whoever can emit Prefect events could name another model for a round: the audit refuses it
    from flows.privacy_audit import privacy_audit
    from primia.audit.event import round_event_payload
    from primia.errors import IntegrityError

    store = runtime.checkpoints(fid)
    round_1 = store.load_round(1).ref("global.safetensors")
    forged = round_event_payload(fid, 2, round_1, summary["mlflow_run_id"], "fedavg", ["h1", "h2", "h3"], 100, True)
    with pytest.raises(IntegrityError, match="committed global model"):
        privacy_audit(forged)
    version = summary["registry"]["version"]
    tags = mlc.get_model_version(fid, version).tags
    selected = summary["selected_round"]
    assert tags["primia.audit.verdict"] == (verdicts.get(str(selected)) or "not audited")


def test_a_failed_audit_halts_training_when_the_policy_says_so(live_stack: stack.StackState, audit_dirs: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    policy = tmp_path / "strict.yaml"  # no reconstruction can be this poor: every audit FAILs
    policy.write_text(yaml.safe_dump({"reconstruction": {"max_ssim": 1e-6}, "halt_on_fail": True}))
    summary = _train(_raw(audit_dirs, "it-audit-halt", rounds=3), monkeypatch, "subflow", policy)
    assert "privacy audit failed" in summary["stopped"] and "recon_ssim" in summary["stopped"]
    mlc = registry_client()
    tags = mlc.get_run(summary["mlflow_run_id"]).data.tags
    assert tags["primia.audit.round.1.verdict"] == "FAIL" and "primia.audit.round.2.verdict" not in tags
    assert "primia.audit.halt" in tags


@pytest.fixture(scope="module")
def coordinator_worker(live_stack: stack.StackState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with triggered_coordinator(tmp_path_factory.mktemp("audit-worker") / "worker.log", "coordinator-audit",
                               pause_after=("privacy-audit/privacy-audit", "promote-model/promote-model")) as log:
        yield log


def test_rounds_trigger_the_audit_deployment_and_promotion_reads_it(
        coordinator_worker: Path, audit_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audits' flow runs are created by the automation (not by the training flow), run by the pinned
    worker; their verdicts reach the version and the promotion gate."""
    fid = "it-audit-trigger"
    summary = _train(_raw(audit_dirs, fid, rounds=3), monkeypatch, "trigger")
    runs = _audit_runs(fid, 3)
    assert len(runs) == 3, coordinator_worker.read_text()[-3000:]
    for run in runs:
        assert run.created_by is not None and run.created_by.type == "AUTOMATION"
        state = final_state(run.id, 240)
        assert state.is_completed(), (state, coordinator_worker.read_text()[-3000:])
    mlc = registry_client()
    verdicts = _check_round_records(mlc, summary["mlflow_run_id"], 3)
    version, selected = summary["registry"]["version"], summary["selected_round"]
    expected = verdicts.get(str(selected))
    assert expected is not None, (selected, verdicts)  # a trained round was selected (its audit ran)
    deadline, tags = time.monotonic() + 240, {}
    while time.monotonic() < deadline:  # promotion runs again when the audit tags the version
        tags = mlc.get_model_version(fid, version).tags
        if tags.get("primia.gate.audit.verdict") == expected:
            break
        time.sleep(1)
    assert tags["primia.audit.verdict"] == expected
    assert tags["primia.gate.audit.verdict"] == expected, (tags, coordinator_worker.read_text()[-3000:])
    assert tags["primia.gate.audit"] == ("PASS" if expected == "PASS" else "FAIL")
