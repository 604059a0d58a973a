"""A pinned flow-run engine: Prefect's `python -m prefect.engine`, but running a flow this machine imports
itself (one of `PINNED`, named by the pinned worker in PRIMIA_PINNED_FLOW), never one the Prefect server
names. Hospitals run only flows/local_training.py; the coordinator's worker only the flows of prefect.yaml.

Prefect's engine loads a run's flow from its deployment record on the server - the entrypoint, the
storage path to copy and the pull steps to run - so whoever holds the Prefect API could run code at
the hospital. This engine asks the server only for the flow run (its id, parameters, state) and
runs the local flow; states, logs and cancellation work as with Prefect's own engine.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any
from uuid import UUID

PINNED = {  # the only flows any pinned worker may start, by import path
    "flows.local_training:local_training",
    "flows.scheduled:federated_training_from_file",
    "flows.centralized_training:centralized_training",
    "flows.promote_model:promote_model",
    "flows.privacy_audit:privacy_audit",
}
FLOW_ENV = "PRIMIA_PINNED_FLOW"


def local_flow(path: str) -> Any:
    if path not in PINNED:
        raise SystemExit(f"primia engine: {path!r} is not a pinned flow; refusing to run anything")
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def run_pinned(flow_run_id: UUID, flow_path: str = "flows.local_training:local_training") -> None:
    from prefect._internal.control_listener import configure_from_env
    from prefect.engine import handle_engine_signals

    configure_from_env()  # the runner's control channel (cancellation), before any flow code
    with handle_engine_signals(flow_run_id):
        from prefect._internal.metrics import RunMetrics
        from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow

        flow = local_flow(flow_path)
        flow_run = load_flow_run(flow_run_id=flow_run_id)
        with RunMetrics(flow_run, flow):
            run_flow(flow, flow_run=flow_run,
                     error_logger=flow_run_logger(flow_run=flow_run))  # type: ignore[arg-type]  # an adapter


def flow_run_id(argv: list[str], env: dict[str, str] | os._Environ[str]) -> UUID:
    return UUID(argv[0] if argv else env["PREFECT__FLOW_RUN_ID"])


if __name__ == "__main__":
    run_pinned(flow_run_id(sys.argv[1:], os.environ), os.environ.get(FLOW_ENV, "flows.local_training:local_training"))
