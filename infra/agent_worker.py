"""A Prefect worker that runs only what its machine pinned: a hospital agent's, and the coordinator's.

`python -m infra.agent_worker --pool hospital-NAME` (a hospital) or `--pool primia-coordinator --role
coordinator` is a process worker (work-pool type "process") with one change: everyone who holds the
Prefect login (every party: it is one credential) can create and edit deployments and runs, so before a
flow run is started the worker checks it against what this machine pinned,
not against what the Prefect server says - the deployment (its name, entrypoint, storage, pull steps,
job variables and parameter schema), the run's own job-variable overrides (none are accepted), the
resolved command, working folder and environment, and the parameters against the local flow's
signature. A run that differs is marked Failed ("Refused") with the reason and nothing is executed.
The command it then starts is the pinned one (the warm launcher, which runs the local flow), and the
flow the worker itself consults for crash and cancellation hooks is the local one too: Prefect's
stock worker would load it from the deployment record (running its pull steps) for those hooks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.runner._flow_run_executor import FlowRunExecutorContext  # what ProcessWorker.run uses (3.9)
from prefect.runner._starter_engine import EngineCommandStarter
from prefect.states import Failed
from prefect.utilities.callables import parameter_schema
from prefect.utilities.engine import propose_state
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

ENTRYPOINT = "flows/local_training.py:local_training"


@dataclass(frozen=True)
class Pin:
    """One deployment this machine runs: which local flow, with which command and pull steps."""

    flow: Flow[..., Any]
    deployment_name: str  # "local-training/hospital-NAME"
    command: str
    working_dir: str
    entrypoint: str = ENTRYPOINT
    flow_path: str = "flows.local_training:local_training"  # what the pinned engine imports
    pull_steps: tuple[dict[str, Any], ...] = ()

    @property
    def job_variables(self) -> dict[str, Any]:
        return {"command": self.command, "working_dir": self.working_dir}


def normalised_schema(schema: Any) -> dict[str, Any]:
    """A parameter schema as the server stores it (without the empty `definitions`/`required`)."""
    if hasattr(schema, "model_dump"):
        schema = schema.model_dump(mode="json", exclude_unset=True)
    schema = json.loads(json.dumps(schema or {}))
    for key in ("definitions", "required"):
        if not schema.get(key):
            schema.pop(key, None)
    return dict(schema)


class RunRefused(Exception):  # noqa: N818  # an outcome, handed to Prefect as "not started"
    pass


with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # a subclass re-registers the "process" worker type

    class PinnedProcessWorker(ProcessWorker):
        type = "process"

        def __init__(self, *args: Any, pins: list[Pin], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pins = pins
            self._ids: dict[UUID, Pin] = {}

        async def _expected(self, pin: Pin, flow_run: FlowRun, deployment: Any) -> ProcessJobConfiguration:
            """What Prefect's own process template and the pinned job variables resolve to for this run
            (so a tampered work-pool template is caught too)."""
            cfg = await ProcessJobConfiguration.from_template_and_values(
                ProcessWorker.get_default_base_job_template(), dict(pin.job_variables), client=self.client)
            cfg.prepare_for_flow_run(flow_run, deployment, await self.client.read_flow(flow_run.flow_id),
                                     self.work_pool, self.name, self.backend_id)
            return cfg

        async def _pin_of(self, flow_run: FlowRun) -> Pin | None:
            if not self._ids:
                from prefect.exceptions import ObjectNotFound

                for pin in self.pins:
                    try:
                        self._ids[(await self.client.read_deployment_by_name(pin.deployment_name)).id] = pin
                    except ObjectNotFound:
                        continue
            return self._ids.get(flow_run.deployment_id) if flow_run.deployment_id else None

        async def refusal(self, flow_run: FlowRun, configuration: ProcessJobConfiguration
                          ) -> tuple[str, Pin | None, ProcessJobConfiguration | None]:
            """Why this run must not be started here ("" when it is what this machine pinned)."""
            pin = await self._pin_of(flow_run)
            if pin is None:
                names = ", ".join(p.deployment_name for p in self.pins)
                return f"the flow run is not of a deployment this machine pinned ({names})", None, None
            if flow_run.job_variables:
                return f"job-variable overrides are not accepted: {sorted(flow_run.job_variables)}", None, None
            d = await self.client.read_deployment(flow_run.deployment_id)  # type: ignore[arg-type]
            problems = []
            if d.entrypoint != pin.entrypoint:
                problems.append(f"entrypoint {d.entrypoint!r} is not {pin.entrypoint!r}")
            if d.storage_document_id is not None or d.path not in (None, "."):
                problems.append(f"the deployment names code storage (path {d.path!r})")
            if list(d.pull_steps or []) != list(pin.pull_steps):
                problems.append(f"the deployment's pull steps {d.pull_steps!r} are not the pinned ones")
            if (d.job_variables or {}) != pin.job_variables:
                problems.append(f"deployment job variables {d.job_variables!r} are not the pinned ones")
            if normalised_schema(d.parameter_openapi_schema) != normalised_schema(parameter_schema(pin.flow)):
                problems.append("the deployment's parameter schema is not the local flow's")
            expected = await self._expected(pin, flow_run, d)
            for attr in ("command", "working_dir", "stream_output"):
                if getattr(configuration, attr) != getattr(expected, attr):
                    problems.append(f"resolved {attr} {getattr(configuration, attr)!r} is not the pinned "
                                    f"{getattr(expected, attr)!r}")
            env = sorted(k for k in set(configuration.env) | set(expected.env)
                         if configuration.env.get(k) != expected.env.get(k))
            if env:
                problems.append(f"the resolved environment differs in {env}")
            try:
                pin.flow.validate_parameters(flow_run.parameters or {})
            except Exception as exc:  # noqa: BLE001  # Prefect's parameter errors: a reason, not a crash
                problems.append(f"parameters rejected by the local flow: {exc}")
            return "; ".join(problems), pin, expected

        async def run(self, flow_run: FlowRun, configuration: ProcessJobConfiguration,
                      task_status: anyio.abc.TaskStatus[int] | None = None) -> ProcessWorkerResult:
            task_status = task_status or anyio.TASK_STATUS_IGNORED
            reason, pin, expected = await self.refusal(flow_run, configuration)
            if reason or expected is None or pin is None:
                self.get_flow_run_logger(flow_run).error("refused by this machine's pinned worker: %s", reason)
                refused = Failed(name="Refused", message=f"refused by this machine's pinned worker: {reason}")
                await propose_state(self.client, refused, flow_run_id=flow_run.id)
                task_status.started(RunRefused(reason))  # type: ignore[arg-type]  # an Exception: "not started"
                return ProcessWorkerResult(status_code=0, identifier="refused")
            return await self._start(pin, flow_run, expected, task_status)

        async def _start(self, pin: Pin, flow_run: FlowRun, expected: ProcessJobConfiguration,
                         task_status: anyio.abc.TaskStatus[int]) -> ProcessWorkerResult:
            from infra.agent_engine import FLOW_ENV

            flow = pin.flow

            async def resolve_flow(_: FlowRun) -> Flow[..., Any]:
                return flow  # crash/cancellation hooks: the local flow, never the deployment's

            execution = None
            async with FlowRunExecutorContext() as ctx:
                starter = EngineCommandStarter(command=pin.command, cwd=Path(pin.working_dir),
                                               env={**expected.env, FLOW_ENV: pin.flow_path},
                                               stream_output=expected.stream_output,
                                               control_channel=ctx.control_channel)
                executor = ctx.create_executor(flow_run, starter, resolve_flow=resolve_flow, propose_submitting=False)

                async def execute(*, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                async with anyio.create_task_group() as tg:
                    handle = await tg.start(execute)
                    task_status.started(handle.pid)
            if execution is None or execution.status_code is None:
                raise RuntimeError("the flow run's process did not start")
            return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


COORDINATOR_COMMAND = f"{sys.executable} -m infra.agent_engine"  # prefect.yaml: "{{ $PRIMIA_PYTHON }} -m ..."


def pins_for(pool: str, role: str) -> list[Pin]:
    """A hospital: its own local-training deployment, started through its warm launcher. The coordinator:
    the deployments of prefect.yaml, as `make deploy` registers them."""
    from infra.agent import LAUNCH_COMMAND, REPO

    if role == "hospital":
        from flows.local_training import local_training

        return [Pin(local_training, f"local-training/{pool}", LAUNCH_COMMAND, str(REPO))]
    from flows.centralized_training import centralized_training
    from flows.privacy_audit import privacy_audit
    from flows.promote_model import promote_model
    from flows.scheduled import federated_training_from_file

    pull = ({"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}},)
    return [Pin(federated_training_from_file, "federated-training-from-file/federated-training", COORDINATOR_COMMAND,
                str(REPO), "flows/scheduled.py:federated_training_from_file",
                "flows.scheduled:federated_training_from_file", pull),
            Pin(centralized_training, "centralized-training/centralized-training", COORDINATOR_COMMAND, str(REPO),
                "flows/centralized_training.py:centralized_training", "flows.centralized_training:centralized_training",
                pull),
            Pin(promote_model, "promote-model/promote-model", COORDINATOR_COMMAND, str(REPO),
                "flows/promote_model.py:promote_model", "flows.promote_model:promote_model", pull),
            Pin(privacy_audit, "privacy-audit/privacy-audit", COORDINATOR_COMMAND, str(REPO),
                "flows/privacy_audit.py:privacy_audit", "flows.privacy_audit:privacy_audit", pull)]


async def serve(pool: str, name: str, poll_s: float, role: str = "hospital") -> int:
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    from infra.agent_wake import wake_on_scheduled

    worker = PinnedProcessWorker(work_pool_name=pool, name=name, pins=pins_for(pool, role), prefetch_seconds=10,
                                 create_pool_if_not_found=False)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    # the server's event stream wakes the worker when a run lands on its pool; the timed poll stays
    waker = asyncio.create_task(wake_on_scheduled(pool, worker.get_and_submit_flow_runs,
                                                  lambda: worker._runs_task_group is not None))
    try:
        with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: poll_s}):  # read when start() runs
            await worker.start()
    except asyncio.CancelledError:
        pass
    finally:
        waker.cancel()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--role", choices=("hospital", "coordinator"), default="hospital")
    args = parser.parse_args()
    return asyncio.run(serve(args.pool, args.name, args.poll_seconds, args.role))


if __name__ == "__main__":
    sys.exit(main())
