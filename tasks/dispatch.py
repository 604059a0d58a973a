"""Distributed mode: each dispatch is a `local-training` flow run on the hospital's own agent, started
with run_deployment and references only; the coordinator learns a hospital stopped from its run's
state. Late runs are cancelled so a hospital that comes back later does not train a stale round."""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from primia.config import FederationConfig
from primia.federation.liveness import Liveness
from primia.federation.roster import HospitalEntry, Roster
from primia.federation.rounds import Dispatch

POLL_SECONDS = 0.2  # the coordinator's wait loop: one light read of the round's flow runs per poll


def deployment_name(entry: HospitalEntry) -> str:
    return f"local-training/{entry.pool}"


class AgentHospitals:
    """`primia.federation.rounds.Hospitals` for distributed mode: one flow run per hospital agent."""

    def __init__(self, cfg: FederationConfig, roster: Roster, liveness: Liveness) -> None:
        self.cfg, self.roster, self.liveness = cfg, roster, liveness
        self.runs: dict[str, FlowRun] = {}
        self.ended: dict[str, str] = {}  # hospital -> "" (completed) or why its run did not complete
        self.silenced: set[str] = set()  # their agents fell silent: their runs are cancelled
        self._checked = 0.0

    def start(self, dispatches: dict[str, Dispatch]) -> dict[str, str]:
        spec = self.cfg.local_spec().model_dump(mode="json")
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(dispatches)))) as pool:  # API calls overlap
            # Each call runs in a copy of this thread's context (taken here, not in the pool's thread, whose
            # context is empty): the flow run's Prefect settings and client, not an ephemeral server's.
            futures = [pool.submit(contextvars.copy_context().run, self._start, spec, h, d)
                       for h, d in dispatches.items()]
            started = [f.result() for f in futures]
        return {h: why for h, why in started if why}

    def _start(self, spec: dict[str, Any], hospital: str, d: Dispatch) -> tuple[str, str]:
        entry = self.roster.active().get(hospital)
        if entry is None:
            return hospital, "not an active hospital of the signed roster"
        params = {"server_round": d.server_round, "global_ref": asdict(d.global_ref) if d.global_ref else None,
                  "spec": spec, "nonce": d.nonce, "train": d.train, "secagg": d.secagg, "stats": d.stats,
                  "validate": d.validate, "audit": d.audit}
        try:
            self.runs[hospital] = run_deployment(  # type: ignore[assignment]  # sync call inside a flow
                deployment_name(entry), parameters=params, timeout=0,
                flow_run_name=f"{self.cfg.federation_id}-round-{d.server_round}-{hospital}" + ("-audit" * d.audit),
                tags=[f"federation:{self.cfg.federation_id}", f"round:{d.server_round}", f"hospital:{hospital}"],
            )
        except ObjectNotFound:
            return hospital, (f"no deployment {deployment_name(entry)}: start its agent "
                              f"(`primia agent start --hospital {hospital}`)")
        return hospital, ""

    def gone(self) -> set[str]:
        """Hospitals whose flow run has ended or whose agent fell silent (a killed agent's run stays
        RUNNING on the server); reads the runs' states at most once a second."""
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self._poll()
        return set(self.ended) | self.liveness.silent(self.runs)

    def _poll(self) -> None:
        pending = {fr.id: h for h, fr in self.runs.items() if h not in self.ended}
        if not pending:
            return
        with get_client(sync_client=True) as client:
            for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(pending)))):
                if fr.state is not None and fr.state.is_final():
                    self.ended[pending[fr.id]] = "" if fr.state.is_completed() else \
                        f"flow run {fr.state.name}: {fr.state.message or ''}".strip()

    def finish(self, deadline: float) -> dict[str, str]:
        """Poll the round's flow runs until each is final, its agent is silent, or the deadline passes;
        cancel the others."""
        while set(self.runs) - set(self.ended) and time.monotonic() < deadline:
            self._poll()
            for h in self.liveness.silent(self.runs) & (set(self.runs) - set(self.ended)):
                self.ended[h], self.silenced = self.liveness.silence(h), self.silenced | {h}
            if set(self.runs) - set(self.ended):
                time.sleep(POLL_SECONDS)
        late = {h: fr.id for h, fr in self.runs.items() if h not in self.ended or h in self.silenced}
        if late:
            with get_client(sync_client=True) as client:
                for h, run_id in late.items():
                    _cancel(client, run_id)
                    self.ended.setdefault(h, f"no answer within {self.cfg.policy.round_timeout_s:g} s "
                                             f"(policy.round_timeout_s)")
        return dict(self.ended)


def _cancel(client: Any, flow_run_id: UUID) -> None:
    """Running: ask its worker to stop it; not started (no worker): cancel it outright."""
    fr = client.read_flow_run(flow_run_id)
    running = fr.state is not None and fr.state.is_running()
    state: State[Any] = (Cancelling(message="late: dropped from the round") if running
                         else Cancelled(message="late: dropped"))
    client.set_flow_run_state(flow_run_id, state, force=True)
