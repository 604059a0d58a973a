"""Embedded mode: the round's hospitals as concurrent Prefect tasks in the coordinator's process, each
on its own data partition, each signing with a key made for the round (a simulation on one machine)."""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import tags, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait

from primia import runtime
from primia.config import FederationConfig, HospitalConfig
from primia.federation.agent import answer
from primia.federation.roster import Roster
from primia.federation.rounds import Dispatch
from primia.federation.secure_round import hospital_side
from primia.privacy.keeper import MemoryRecord
from primia.secure.protocol import Floors, MemoryLedger

_ledgers: dict[str, MemoryLedger] = {}  # each simulated hospital's memory of the sums it helped unmask
_records: dict[str, MemoryRecord] = {}  # the simulated hospitals' floors under their privacy accounts


@task(name="local-training", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="{hospital.name}-round-{dispatch.server_round}")
def local_training(hospital: HospitalConfig, dispatch: Dispatch, cfg: FederationConfig, key: Ed25519PrivateKey,
                   roster: Roster) -> dict[str, Any]:
    """Validate the incoming global model, train on local data and answer the dispatch, as an agent does
    (secure aggregation with the simulated roster's keys; the signed answer in the store)."""
    store, spec = runtime.checkpoints(cfg.federation_id), cfg.local_spec()
    secure = None
    if dispatch.secagg is not None:
        floors = Floors(members=frozenset(roster.active()), min_parties=2,
                        max_parties=cfg.secure_aggregation.max_hospitals)
        secure = hospital_side(store, store, dispatch.secagg, hospital.name, key.sign, roster.verifier(),
                               roster.coordinator_check, floors, _ledgers.setdefault(hospital.name, MemoryLedger()),
                               dispatch.expected(cfg.federation_id))
    signed = answer(hospital, key, store, store, dispatch, spec, secure,
                    record=_records.setdefault(cfg.federation_id, MemoryRecord()))
    return {"hospital": hospital.name, "digest": signed.digest}


class EmbeddedHospitals:
    """`primia.federation.rounds.Hospitals` for embedded mode: one task per hospital."""

    def __init__(self, cfg: FederationConfig, keys: dict[str, Ed25519PrivateKey], roster: Roster) -> None:
        self.cfg, self.keys, self.roster = cfg, keys, roster
        self.futures: dict[str, PrefectFuture[dict[str, Any]]] = {}

    def start(self, dispatches: dict[str, Dispatch]) -> dict[str, str]:
        by_name = {h.name: h for h in self.cfg.hospitals}
        for name, d in dispatches.items():
            with tags(f"hospital:{name}"):
                self.futures[name] = local_training.submit(by_name[name], d, self.cfg, self.keys[name], self.roster)
        return {}

    def gone(self) -> set[str]:
        return {n for n, f in self.futures.items() if f.wrapped_future.done()}  # type: ignore[attr-defined]

    def finish(self, deadline: float) -> dict[str, str]:
        done = wait(list(self.futures.values()), timeout=max(0.0, deadline - time.monotonic())).done
        out = {}
        for name, f in self.futures.items():
            if f not in done:
                out[name] = f"no answer within {self.cfg.policy.round_timeout_s:g} s (policy.round_timeout_s)"
                continue
            f.wait()  # done already; this only settles its final state
            state = f.state
            out[name] = "" if state.is_completed() else f"{state.name}: {state.message or ''}".strip()
        return out
