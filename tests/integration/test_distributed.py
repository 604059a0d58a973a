"""Distributed rounds: three hospital agents (real Prefect process workers, separate processes, each
on its own data folder), the coordinator dispatching with run_deployment and verifying signed answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import stack
from infra.agent import REPO, spawn_agent, stop_agent, wait_online
from primia import runtime
from primia.config import parse_federation_config
from primia.data.synthetic import make_synthetic, write_image_folder
from primia.errors import RoundFailedError

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAMES = ("dh1", "dh2", "dh3")


class Agents:
    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home, self.procs = root, home, {}  # type: ignore[var-annotated]
        self.rogue_dir = root / "rogue"
        self.rogue_dir.mkdir(exist_ok=True)

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    def start(self, name: str) -> None:
        log = self.root / "logs" / f"{name}.log"
        self.procs[name] = spawn_agent(name, self.data(name), log)  # the agents' privacy floor at its default
        wait_online(f"hospital-{name}", self.procs[name], log)

    def kill(self, name: str) -> None:
        stop_agent(self.procs[name], kill=True)


@pytest.fixture(scope="module")
def agents(live_stack: stack.StackState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    from infra.enrol import enrol

    root = tmp_path_factory.mktemp("distributed")
    a = Agents(root, Path(os.environ["PRIMIA_HOME"]))
    for k, name in enumerate(NAMES):
        write_image_folder(make_synthetic(48, 2, 32, seed=20 + k, noise=0.1), a.data(name))
        enrol(name, a.home / "hospitals" / name)
    write_image_folder(make_synthetic(48, 2, 32, seed=30, noise=0.1), root / "coordinator-test")
    try:
        for name in NAMES:
            a.start(name)
        yield a
    finally:
        for proc in a.procs.values():
            stop_agent(proc)


def _raw(a: Agents, federation_id: str, rounds: int, **policy: Any) -> dict[str, Any]:
    return {
        "federation_id": federation_id, "rounds": rounds, "seed": 3, "class_names": ["class0", "class1"],
        "data": {"image_size": 32, "val_fraction": 0.2, "augment": {"enabled": False}},
        "training": {"batch_size": 16, "lr": 0.01},
        "policy": {"min_hospitals": 2, "round_timeout_s": 120, "round_retries": 0, **policy},
        "secure_aggregation": {"stage_timeout_s": 8},  # a dead agent never advertises: do not wait long
        "hospitals": [{"name": n} for n in NAMES],  # names only: data paths stay with the agents
        "test_data": {"path": str(a.root / "coordinator-test")},
    }


def _round_tables(federation_id: str, descriptions: dict[int, str] | None = None) -> dict[int, list[dict[str, Any]]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            f"{federation_id}-rounds"])), limit=50)
    tables: dict[int, list[dict[str, Any]]] = {}
    for art in sorted(arts, key=lambda x: x.created):  # type: ignore[arg-type,return-value]
        rnd = int(str(art.description).split("round ")[1].split(":")[0])
        tables[rnd] = json.loads(str(art.data))
        if descriptions is not None:
            descriptions[rnd] = str(art.description)
    return tables


def _run_in_process(raw: dict[str, Any]) -> dict[str, Any]:
    from flows.federated_training import federated_training

    os.environ["PRIMIA_MODE"] = "distributed"
    runtime.reset()
    try:
        return federated_training(parse_federation_config(raw))
    finally:
        os.environ.pop("PRIMIA_MODE", None)
        runtime.reset()


def test_two_rounds_on_three_agents_without_the_coordinator_reading_hospital_files(agents: Agents) -> None:
    fid = f"dist-{int(time.time())}"
    config = agents.root / f"{fid}.yaml"
    config.write_text(yaml.safe_dump(_raw(agents, fid, rounds=2, min_hospitals=3)))
    audit = agents.root / f"{fid}-audit.log"
    env = {**os.environ, "PRIMIA_MODE": "distributed", "PYTHONPATH": str(REPO / "tests/integration/audit"),
           "PRIMIA_TEST_FORBIDDEN": os.pathsep.join(str(agents.data(n)) for n in NAMES),
           "PRIMIA_TEST_WATCH": str(agents.root / "coordinator-test"), "PRIMIA_TEST_AUDIT_LOG": str(audit)}
    done = subprocess.run([sys.executable, "-m", "primia.cli", "train", "-c", str(config), "--json"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])["federated"]
    assert len(summary["timings"]) == 2
    lines = audit.read_text().splitlines()
    assert not [x for x in lines if x.startswith("denied")], lines  # no hospital file, not even tried
    assert any(x.startswith("watched") for x in lines)  # the hook was live: it saw the coordinator's test set
    descriptions: dict[int, str] = {}
    tables = _round_tables(fid, descriptions)
    for rnd in (1, 2):
        assert sorted((r["hospital"], r["status"]) for r in tables[rnd]) == [(n, "accepted") for n in NAMES]
        assert "secure aggregation ON: SecAgg, threshold 2 of 3" in descriptions[rnd]
        assert "in the sum: dh1, dh2, dh3" in descriptions[rnd]
    store = runtime.checkpoints(fid)
    assert store.committed_rounds() == [0, 1, 2]
    assert not [o for o in store.store.list(store.round_prefix(1) + "updates/")]  # no update left in the clear
    assert summary["last_round_test"]["mcc"] > 0.3  # it learned (from sums only)


def _kill_when_running(agents: Agents, name: str, fid: str) -> threading.Thread:
    """Kill the agent (worker, fork server, run) once its flow run of round 1 is RUNNING."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    def watch() -> None:
        with get_client(sync_client=True) as client:
            for _ in range(600):
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[f"{fid}-round-1-{name}"])))
                if runs and runs[0].state is not None and runs[0].state.is_running():
                    agents.kill(name)
                    return
                time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_a_killed_worker_is_dropped_with_quorum_two_and_fails_a_quorum_of_three(agents: Agents) -> None:
    fid = f"kill-{int(time.time())}"
    watcher = _kill_when_running(agents, "dh3", fid)
    summary = _run_in_process(_raw(agents, fid, rounds=2, min_hospitals=2, round_timeout_s=20))
    watcher.join(5)
    assert len(summary["timings"]) == 2
    tables = _round_tables(fid)
    for rnd in (1, 2):
        rows = {r["hospital"]: r for r in tables[rnd]}
        assert rows["dh1"]["status"] == rows["dh2"]["status"] == "accepted"
        assert rows["dh3"]["status"] == "dropped"
        assert rows["dh3"]["reason"].startswith("no answer within 20 s (policy.round_timeout_s)")
    with pytest.raises(RoundFailedError) as info:  # dh3 is still down
        _run_in_process(_raw(agents, f"{fid}-q3", rounds=1, min_hospitals=3, round_timeout_s=10))
    msg = str(info.value)
    # already the normalisation pass before round 1 sees that dh3 never advertised its keys: no quorum
    assert "round 0: 2 of 3 hospitals remain in secure aggregation after stage advertise, quorum is 3" in msg
    assert "dh3: secure aggregation: no advertise message in time" in msg and "nothing was committed" in msg
    assert runtime.checkpoints(f"{fid}-q3").committed_rounds() == []
    agents.start("dh3")  # back for the next test


