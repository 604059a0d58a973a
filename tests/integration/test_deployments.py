"""prefect.yaml deploys against the live server: a nightly federated-training schedule (inactive in
tests) that takes a config file, and the centralized baseline; no hospital deployment (the agents own
theirs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LOCAL = "flows/local_training.py:local_training"


def test_prefect_yaml_deploys_with_an_inactive_nightly_schedule(live_stack: stack.StackState) -> None:
    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": live_stack.urls["prefect_api"], "PRIMIA_REPO": str(ROOT),
           "PRIMIA_PYTHON": sys.executable, "PRIMIA_SCHEDULE_ACTIVE": "false",
           "PRIMIA_TRIGGERS_ENABLED": "false"}
    prefect = str(Path(sys.executable).parent / "prefect")
    with get_client(sync_client=True) as client:  # agents of earlier tests may have registered theirs
        before = {d.id: d.updated for d in client.read_deployments() if d.entrypoint == LOCAL}
    pools = [[prefect, "work-pool", "create", "primia-coordinator", "--type", "process", "--overwrite"]]
    for cmd in (*pools, [prefect, "--no-prompt", "deploy", "--all"]):
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    fed = deployments["federated-training"]
    assert fed.entrypoint == "flows/scheduled.py:federated_training_from_file"
    assert fed.parameters == {"config_path": "configs/demo.yaml"}
    assert [(s.schedule.cron, s.active) for s in fed.schedules] == [("0 2 * * *", False)]  # type: ignore[union-attr]
    assert "centralized-training" in deployments
    promote = deployments["promote-model"]  # the registry's gatekeeper: nightly re-check + the training trigger
    assert promote.entrypoint == "flows/promote_model.py:promote_model"
    assert [(s.schedule.cron, s.active) for s in promote.schedules] == [("30 3 * * *", False)]  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        automations = client.read_resource_related_automations(f"prefect.deployment.{promote.id}")
    assert len(automations) == 2 and not any(a.enabled for a in automations)  # PRIMIA_TRIGGERS_ENABLED=false
    assert sorted(next(iter(a.trigger.expect)) for a in automations) == [  # type: ignore[union-attr]
        "primia.audit.completed", "primia.training.completed"]
    audit = deployments["privacy-audit"]  # started by every committed round's event
    assert audit.entrypoint == "flows/privacy_audit.py:privacy_audit" and not audit.schedules
    with get_client(sync_client=True) as client:
        automations = client.read_resource_related_automations(f"prefect.deployment.{audit.id}")
    assert len(automations) == 1 and not automations[0].enabled
    assert automations[0].trigger.expect == {"primia.round.completed"}  # type: ignore[union-attr]
    after = {d.id: d.updated for d in deployments.values() if d.entrypoint == LOCAL}
    assert after == before, "hospital deployments belong to the hospitals' agents (they refuse any other)"


def test_config_file_entry_point(live_stack: stack.StackState, federation_dirs: Path, tmp_path: Path) -> None:
    import yaml

    from flows.scheduled import federated_training_from_file
    from tests.integration.conftest import federation_raw

    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(federation_raw(federation_dirs, "it-nightly", rounds=1)))
    summary = federated_training_from_file(str(path))
    assert summary["federation_id"] == "it-nightly" and summary["selected_round"] in (0, 1)
