"""A hospital agent: one Prefect process worker on the hospital's pool, plus a warm launcher.

`primia agent start --hospital NAME` checks the hospital's identity against the registry, makes
sure its work pool `hospital-NAME` and its `local-training` deployment exist, starts a fork server
that has imported the training stack, and runs `prefect worker start` with the hospital's own
settings in its environment. Each flow run the worker starts hands itself to the fork server
(infra/agent_launch.py), so Prefect stays in charge of every run while a round costs no imports.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LAUNCH_COMMAND = f"{sys.executable} -m infra.agent_launch"
# What the coordinator's processes may have in their environment and a hospital agent must not inherit.
COORDINATOR_ONLY = frozenset({"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PRIMIA_S3__ACCESS_KEY",
                              "PRIMIA_S3__SECRET_KEY", "PRIMIA_CRYPTO__SIGNING_KEY", "PRIMIA_CRYPTO__KEY_FILE",
                              "PRIMIA_MLFLOW__USERNAME", "PRIMIA_MLFLOW__PASSWORD"})


def ensure_pool_and_deployment(pool: str, hospital: str) -> None:
    """The hospital's process work pool and its `local-training/<pool>` deployment (idempotent)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.local_training import local_training

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   description=f"primia hospital agent {hospital}"))
    deployment = local_training.to_deployment(
        name=pool, work_pool_name=pool, tags=[f"hospital:{hospital}", "primia"],
        job_variables={"command": LAUNCH_COMMAND, "working_dir": str(REPO)},
        description=f"{hospital}'s part of a federated round, run by its own agent on its own data",
    )
    deployment.apply()  # type: ignore[union-attr]  # sync here: Prefect dispatches by context


def _run_engine(env: dict[str, str], cwd: str, argv: list[str]) -> None:
    """In a child forked from the warm server: run the flow run with the locally imported flow."""
    from infra.agent_engine import flow_run_id, run_pinned

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["infra.agent_engine", *argv]
    run_pinned(flow_run_id(argv, env))  # a hospital's warm launcher runs local-training, whatever it is told


class WarmLauncher:
    """Unix-socket server: each connection is one flow run, forked from a preloaded fork server."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["infra.agent_preload"])
        self._dir = tempfile.mkdtemp(prefix="primia-agent-")  # short path: Unix socket names are limited
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "launch.sock")
        self._log = log
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def warm_up(self) -> None:
        """Start the fork server now (imports take seconds) rather than in the first round."""
        p = self._ctx.Process(target=os.getpid)
        p.start()
        p.join()

    def serve_in_background(self) -> None:
        self._server.bind(self.path)
        self._server.listen(16)
        threading.Thread(target=self._accept_loop, name="primia-launcher", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request: dict[str, Any] = json.loads(conn.makefile("rb").readline())
            proc = self._ctx.Process(target=_run_engine, args=(request["env"], request["cwd"], request["argv"]))
            proc.start()
            run_id = request["env"].get("PREFECT__FLOW_RUN_ID", "?")
            self._log(f"flow run {run_id}: started in warm process {proc.pid}")
            while proc.exitcode is None:
                waitables: list[Any] = [conn, proc.sentinel]
                ready, _, _ = select.select(waitables, [], [], 1.0)
                if conn in ready and not conn.recv(1, socket.MSG_PEEK):  # the launcher is gone: cancelled
                    self._log(f"flow run {run_id}: launcher gone, stopping process {proc.pid}")
                    proc.terminate()
                    proc.join(10)
                    if proc.exitcode is None:
                        proc.kill()
                    proc.join()
                    return
                proc.join(0)
            code = proc.exitcode if proc.exitcode >= 0 else 128 - proc.exitcode
            self._log(f"flow run {run_id}: exit {code}")
            try:
                conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
        self._server.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


def worker_command(pool: str, hospital: str, poll_seconds: float) -> list[str]:
    """The pinned process worker (infra/agent_worker.py), not `prefect worker start`."""
    return [sys.executable, "-m", "infra.agent_worker", "--pool", pool, "--name", f"{hospital}-agent",
            "--poll-seconds", f"{poll_seconds:g}"]


def run_worker(pool: str, hospital: str, env: dict[str, str], log: Callable[[str], None], poll_seconds: float = 1.0,
               grace_s: float = 10.0) -> int:
    """Run the pinned worker until it exits or this process is told to stop (then `grace_s` to shut
    down cleanly before it is killed)."""
    proc = subprocess.Popen(worker_command(pool, hospital, poll_seconds), env=env, cwd=REPO)
    stop_at: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        if not stop_at:
            log(f"signal {signum}: stopping the worker")
            stop_at.append(time.monotonic())
            proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stop_at and time.monotonic() - stop_at[0] > grace_s:
                log("the worker did not stop in time: killing it")
                proc.kill()


def spawn_log_process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process in its own session, its output in `log` (tests and benchmarks)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)


def spawn_agent(hospital: str, data: Path, log: Path, env: dict[str, str] | None = None,
                poll_seconds: float = 1.0) -> subprocess.Popen[bytes]:
    """`primia agent start` as a child in its own session (tests, benchmarks; stop with stop_agent)."""
    cmd = [sys.executable, "-m", "primia.cli", "agent", "start", "--hospital", hospital, "--data", str(data),
           "--poll-seconds", f"{poll_seconds:g}"]
    log.parent.mkdir(parents=True, exist_ok=True)
    own = {k: v for k, v in os.environ.items() if k not in COORDINATOR_ONLY}  # a hospital holds only its own
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, env={**own, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)


def wait_online(pool: str, agent: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> None:
    """Until a worker of `pool` has sent a heartbeat since now (the agent applies its deployment and
    warms up before it starts its worker). A worker killed moments ago stays ONLINE on the server
    until its heartbeat expires, so status alone would return before this agent is ready."""
    from datetime import datetime

    from prefect.client.orchestration import get_client

    from primia.errors import StackError

    since, deadline = datetime.now(UTC), time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise StackError(f"agent for {pool} exited with {agent.returncode}: {log.read_text()[-2000:]}")
            try:
                if any(w.status == "ONLINE" and w.last_heartbeat_time is not None and w.last_heartbeat_time >= since
                       for w in client.read_workers_for_work_pool(pool)):
                    return
            except Exception:  # noqa: BLE001  # the pool may not exist yet
                pass
            time.sleep(0.5)
    raise StackError(f"no worker of pool {pool} came online within {timeout_s:g} s (log: {log})")


def stop_agent(agent: subprocess.Popen[bytes], kill: bool = False) -> None:
    """Stop an agent and everything it started (worker, fork server, runs): its whole process group."""
    if agent.poll() is not None:
        return
    try:
        os.killpg(agent.pid, signal.SIGKILL if kill else signal.SIGTERM)
        agent.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
    except ProcessLookupError:
        pass
    try:  # the fork server and its children share the group; make sure none outlives the agent
        os.killpg(agent.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
