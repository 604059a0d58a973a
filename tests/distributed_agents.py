"""Three hospital agents for the distributed tests (real pinned Prefect workers, separate processes, each
on its own data folder and with its own S3 identity), shared by the whole test session, and helpers to
run a distributed federation against them and read its round tables."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from infra import stack
from infra.agent import spawn_agent, stop_agent, wait_online
from primia import runtime
from primia.config import parse_federation_config
from primia.data.synthetic import make_synthetic, write_image_folder

NAMES = ("dh1", "dh2", "dh3")


class Agents:
    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home, self.procs = root, home, {}  # type: ignore[var-annotated]

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    def start(self, name: str, poll_seconds: float = 1.0, env: dict[str, str] | None = None) -> None:
        log = self.root / "logs" / f"{name}.log"
        # the agents' privacy floors at their defaults, but for DP: most tests here are of secure aggregation
        self.procs[name] = spawn_agent(name, self.data(name), log,
                                       env={"PRIMIA_HOSPITAL__REQUIRE_DP": "false", **(env or {})},
                                       poll_seconds=poll_seconds)
        wait_online(f"hospital-{name}", self.procs[name], log)

    def kill(self, name: str) -> None:
        stop_agent(self.procs[name], kill=True)


@pytest.fixture(scope="session")
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


def federation(a: Agents, federation_id: str, rounds: int, **policy: Any) -> dict[str, Any]:
    return {
        "federation_id": federation_id, "rounds": rounds, "seed": 3, "class_names": ["class0", "class1"],
        "data": {"image_size": 32, "val_fraction": 0.2, "augment": {"enabled": False}},
        "training": {"batch_size": 16, "lr": 0.01},
        "privacy": {"mode": "off"},  # differential privacy has tests of its own (test_dp_*.py)
        "policy": {"min_hospitals": 2, "round_timeout_s": 120, "round_retries": 0, **policy},
        # a dead agent is dropped by its silent heartbeat (liveness_s) first; 20 s leaves a loaded machine time
        "secure_aggregation": {"stage_timeout_s": 20},
        "hospitals": [{"name": n} for n in NAMES],  # names only: data paths stay with the agents
        "test_data": {"path": str(a.root / "coordinator-test")},
    }


def round_tables(federation_id: str, descriptions: dict[int, str] | None = None) -> dict[int, list[dict[str, Any]]]:
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


def run_in_process(raw: dict[str, Any]) -> dict[str, Any]:
    from flows.federated_training import federated_training

    os.environ["PRIMIA_MODE"] = "distributed"
    runtime.reset()
    try:
        return federated_training(parse_federation_config(raw))
    finally:
        os.environ.pop("PRIMIA_MODE", None)
        runtime.reset()


def final_state(flow_run_id: Any, timeout_s: float = 180) -> Any:  # a loaded machine is slow to refuse
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            fr = client.read_flow_run(flow_run_id)
            if fr.state is not None and fr.state.is_final():
                return fr.state
            time.sleep(0.3)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s} s")


def deploy_prefect_yaml(triggers: bool = False) -> None:
    """`prefect deploy --all` of the repository's prefect.yaml on the test stack (schedules paused; the
    promote-model trigger enabled only when asked), its coordinator pool created first."""
    import subprocess
    import sys

    from infra.agent import REPO

    env = {**os.environ, "PRIMIA_REPO": str(REPO), "PRIMIA_PYTHON": sys.executable, "PRIMIA_SCHEDULE_ACTIVE": "false",
           "PRIMIA_TRIGGERS_ENABLED": str(triggers).lower()}
    prefect = str(Path(sys.executable).parent / "prefect")
    for cmd in ([prefect, "work-pool", "create", "primia-coordinator", "--type", "process", "--overwrite"],
                [prefect, "--no-prompt", "deploy", "--all"]):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def start_coordinator_worker(log: Path, name: str = "coordinator") -> Any:
    """The coordinator's pinned worker (start it after deploying: it pins the deployments it finds)."""
    import sys

    from infra.agent import spawn_log_process

    return spawn_log_process([sys.executable, "-m", "infra.agent_worker", "--pool", "primia-coordinator",
                              "--name", name, "--role", "coordinator"], log)


def pause_automations(*deployments: str) -> None:
    """Pause the event triggers of these deployments (by `flow/deployment` name): later tests' rounds and
    trainings start nothing."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in deployments:
            deployment = client.read_deployment_by_name(name)
            for automation in client.read_resource_related_automations(f"prefect.deployment.{deployment.id}"):
                client.pause_automation(automation.id)


@contextmanager
def triggered_coordinator(log: Path, name: str, paused: tuple[str, ...] = (),
                          pause_after: tuple[str, ...] = ()) -> Iterator[Path]:
    """prefect.yaml deployed with its event triggers on (but `paused`), the coordinator's pinned worker
    running; at the end the worker stops and `pause_after`'s triggers are paused for later tests."""
    deploy_prefect_yaml(triggers=True)
    if paused:
        pause_automations(*paused)
    worker = start_coordinator_worker(log, name)
    try:
        yield log
    finally:
        worker.terminate()
        worker.wait(30)
        pause_automations(*pause_after)
