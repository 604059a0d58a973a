"""A hospital's flow-run engine: Prefect's `python -m prefect.engine`, but running the flow this machine
has imported itself (flows/local_training.py), never one the Prefect server names.

Prefect's engine loads a run's flow from its deployment record on the server - the entrypoint, the
storage path to copy and the pull steps to run - so whoever holds the Prefect API could run code at
the hospital. This engine asks the server only for the flow run (its id, parameters, state) and
runs the local flow; states, logs and cancellation work as with Prefect's own engine.
"""

from __future__ import annotations

import os
import sys
from uuid import UUID


def run_pinned(flow_run_id: UUID) -> None:
    from prefect._internal.control_listener import configure_from_env
    from prefect.engine import handle_engine_signals

    configure_from_env()  # the runner's control channel (cancellation), before any flow code
    with handle_engine_signals(flow_run_id):
        from prefect._internal.metrics import RunMetrics
        from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow

        from flows.local_training import local_training

        flow_run = load_flow_run(flow_run_id=flow_run_id)
        with RunMetrics(flow_run, local_training):
            run_flow(local_training, flow_run=flow_run,
                     error_logger=flow_run_logger(flow_run=flow_run))  # type: ignore[arg-type]  # an adapter


def flow_run_id(argv: list[str], env: dict[str, str] | os._Environ[str]) -> UUID:
    return UUID(argv[0] if argv else env["PREFECT__FLOW_RUN_ID"])


if __name__ == "__main__":
    run_pinned(flow_run_id(sys.argv[1:], os.environ))
