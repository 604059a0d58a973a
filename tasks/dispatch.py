"""Distributed dispatch: start each selected hospital's `local-training` deployment with references
only, wait (never beyond the round's timeout), then verify every signed answer against the registry.

Late runs are cancelled so a hospital that comes back later does not train a stale round.
"""

from __future__ import annotations

import contextvars
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from primia import runtime
from primia.config import FederationConfig
from primia.federation.agent import result_name
from primia.federation.policy import ACCEPTED, DROPPED, REJECTED, Outcome
from primia.federation.secure_round import RoundAnswers, annotate, coordinate
from primia.federation.signed import signed_from_dict, verify_result
from primia.messages import CheckpointRef
from primia.secure.protocol import SecAggAbort
from primia.signing import verifier_for
from tasks.registry import PrimiaHospital, list_hospitals

POLL_SECONDS = 0.2  # the coordinator's wait loop: one light read of the round's flow runs per poll


@dataclass
class _Dispatch:
    hospital: str
    nonce: str
    started: float
    flow_run: FlowRun | None = None
    outcome: Outcome | None = None


def deployment_name(entry: PrimiaHospital) -> str:
    return f"local-training/{entry.work_pool}"


@task(name="dispatch-round", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="dispatch-round-{server_round}-attempt-{attempt}")
def dispatch_round(
    cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, hospitals: list[str], train: bool,
    attempt: int, round_plan: dict[str, Any] | None = None, stats: bool = False,
) -> RoundAnswers:
    """Run the round at the given hospitals' agents; one Outcome per hospital, in order. With a
    secure-aggregation plan the coordinator runs its side of the protocol while the hospitals train.

    Replays across dispatches fail the nonce check; `seen` also stops one answer counting twice here."""
    logger, seen, started = get_run_logger(), set[str](), time.monotonic()
    registry = {r.hospital: r for r in list_hospitals()}
    spec = cfg.local_spec().model_dump(mode="json")
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hospitals)))) as pool:  # API calls overlap
        runs = list(pool.map(lambda h: contextvars.copy_context().run(
            _start, cfg, registry, h, server_round, global_ref, spec, train, round_plan, stats), hospitals))
    secure, aborted = None, ""
    if round_plan is not None:
        verify = verifier_for({h: r.signing_public_key for h, r in registry.items() if r.status == "active"})
        try:
            secure = coordinate(runtime.checkpoints(cfg.federation_id), cfg, round_plan, global_ref, verify, started,
                                cfg.policy.round_timeout_s, _Gone(runs), cfg.policy.min_hospitals)
        except SecAggAbort as exc:
            aborted = str(exc)
    _wait(runs, started + cfg.policy.round_timeout_s, cfg.policy.round_timeout_s)
    registry = {r.hospital: r for r in list_hospitals()}  # again: a revocation during the round counts
    store = runtime.checkpoints(cfg.federation_id)
    for d in runs:
        if d.outcome is None:  # completed: find and verify the signed answer
            d.outcome = _verify(d, store.find_json(server_round, result_name(d.hospital, d.nonce)), registry,
                                cfg.federation_id, server_round, seen)
            update = d.outcome.result.update if d.outcome.result else None
            slot = store.key_for(server_round, f"updates/{d.hospital}.safetensors")
            if train and update is not None and update.key != slot:
                d.outcome = Outcome(d.hospital, REJECTED, f"update reference {update.key} is not its slot {slot}",
                                    seconds=d.outcome.seconds)
    outcomes = annotate([d.outcome for d in runs if d.outcome is not None], secure)
    for o in outcomes:
        level = logger.info if o.status == ACCEPTED else logger.warning
        level("round %d: %s %s (%s)", server_round, o.hospital, o.status, o.reason)
    return RoundAnswers(outcomes, secure, aborted)


class _Gone:
    """Hospitals whose flow run has ended (or never started): the protocol need not wait for them.
    Reads the runs' states at most once a second, however often the protocol asks."""

    def __init__(self, runs: list[_Dispatch]) -> None:
        self.runs, self.checked, self.ended = runs, 0.0, {d.hospital for d in runs if d.flow_run is None}

    def __call__(self) -> set[str]:
        if time.monotonic() - self.checked >= 1.0:
            self.checked = time.monotonic()
            ids = {d.flow_run.id: d.hospital for d in self.runs if d.flow_run is not None}
            with get_client(sync_client=True) as client:
                for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))):
                    if fr.state is not None and fr.state.is_final():
                        self.ended.add(ids[fr.id])
        return self.ended


def _start(cfg: FederationConfig, registry: dict[str, PrimiaHospital], hospital: str, server_round: int,
           global_ref: CheckpointRef | None, spec: dict[str, Any], train: bool,
           round_plan: dict[str, Any] | None, stats: bool) -> _Dispatch:
    d = _Dispatch(hospital, secrets.token_hex(16), time.monotonic())
    entry = registry.get(hospital)
    if entry is None or entry.status != "active":
        d.outcome = Outcome(hospital, DROPPED, "not an active registered hospital")
        return d
    params = {"server_round": server_round, "global_ref": asdict(global_ref) if global_ref else None, "spec": spec,
              "nonce": d.nonce, "train": train, "secagg": round_plan, "stats": stats}
    try:
        d.flow_run = run_deployment(  # type: ignore[assignment]  # sync call inside a flow
            deployment_name(entry), parameters=params, timeout=0,
            flow_run_name=f"{cfg.federation_id}-round-{server_round}-{hospital}",
            tags=[f"federation:{cfg.federation_id}", f"round:{server_round}", f"hospital:{hospital}"],
        )
    except ObjectNotFound:
        d.outcome = Outcome(hospital, DROPPED, f"no deployment {deployment_name(entry)}: start its agent "
                                               f"(`primia agent start --hospital {hospital}`)")
    return d


def _wait(runs: list[_Dispatch], deadline: float, timeout_s: float) -> None:
    """Poll the round's flow runs until each is final or the deadline passes; cancel the late ones."""
    pending = {d.flow_run.id: d for d in runs if d.flow_run is not None and d.outcome is None}
    with get_client(sync_client=True) as client:
        while pending and time.monotonic() < deadline:
            for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(pending)))):
                if fr.state is not None and fr.state.is_final():
                    d = pending.pop(fr.id)
                    d.flow_run = fr
                    if not fr.state.is_completed():
                        d.outcome = Outcome(d.hospital, DROPPED, f"flow run {fr.state.name}: {fr.state.message or ''}"
                                            .strip(), seconds=time.monotonic() - d.started)
            if pending:
                time.sleep(POLL_SECONDS)
        for flow_run_id, d in pending.items():
            _cancel(client, flow_run_id)
            d.outcome = Outcome(d.hospital, DROPPED, f"no answer within {timeout_s:g} s (policy.round_timeout_s)",
                                seconds=time.monotonic() - d.started)


def _cancel(client: Any, flow_run_id: UUID) -> None:
    """Running: ask its worker to stop it; not started (no worker): cancel it outright."""
    fr = client.read_flow_run(flow_run_id)
    running = fr.state is not None and fr.state.is_running()
    state: State[Any] = (Cancelling(message="late: dropped from the round") if running
                         else Cancelled(message="late: dropped"))
    client.set_flow_run_state(flow_run_id, state, force=True)


def _verify(d: _Dispatch, raw: dict[str, Any] | None, registry: dict[str, PrimiaHospital], federation: str,
            server_round: int, seen: set[str]) -> Outcome:
    seconds = time.monotonic() - d.started
    if raw is None:
        return Outcome(d.hospital, REJECTED, "flow run completed but stored no signed answer", seconds=seconds)
    try:
        signed = signed_from_dict(raw)
    except ValueError as exc:
        return Outcome(d.hospital, REJECTED, f"malformed answer: {exc}", seconds=seconds)
    verdict = verify_result(signed, dict(registry), federation, server_round, seen, expected_hospital=d.hospital,
                            expected_nonce=d.nonce)
    status = ACCEPTED if verdict.accepted else REJECTED
    return Outcome(d.hospital, status, verdict.reason, verdict.result, seconds=seconds)
