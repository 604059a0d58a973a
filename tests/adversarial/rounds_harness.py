"""A round of the real core (`primia.federation.rounds.ask`, the hospitals' `answer`, real secure
aggregation and signatures) over an in-memory object store, with hospitals as threads. Each hospital
can be made to misbehave the way a compromised one would; the coordinator is the honest core."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.config import FederationConfig, parse_federation_config
from primia.data.synthetic import make_synthetic, write_image_folder
from primia.federation import coordinator as co
from primia.federation.agent import answer
from primia.federation.roster import HospitalEntry, Roster, simulate
from primia.federation.rounds import Asking, Dispatch, RoundAnswers, ask
from primia.federation.secure_round import hospital_side
from primia.secure.protocol import Floors, MemoryLedger
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring

Rogue = Callable[["Harness", str, Dispatch], Dispatch]  # what a compromised hospital changes in its dispatch


def config(root: Path, names: tuple[str, ...], **extra: Any) -> FederationConfig:
    for k, n in enumerate((*names, "test")):
        if not (root / n).exists():
            write_image_folder(make_synthetic(40, 2, 16, seed=40 + k, noise=0.1), root / n)
    raw = {"federation_id": "adv", "seed": 1, "class_names": ["class0", "class1"],
           "data": {"image_size": 16, "val_fraction": 0.25, "augment": {"enabled": False}},
           "training": {"batch_size": 16}, "model": {"name": "small_cnn"},
           "privacy": {"mode": "off"},  # the attacks here are on secure aggregation
           "policy": {"min_hospitals": 2, "round_timeout_s": 60},
           "secure_aggregation": {"stage_timeout_s": 10},
           "hospitals": [{"name": n, "data": {"path": str(root / n)}} for n in names],
           "test_data": {"path": str(root / "test")}, **extra}
    return parse_federation_config(raw)


@dataclass
class Harness:
    cfg: FederationConfig
    store: CheckpointStore
    keys: dict[str, Ed25519PrivateKey]
    roster: Roster
    ledgers: dict[str, MemoryLedger] = field(default_factory=dict)
    rogues: dict[str, Rogue] = field(default_factory=dict)
    forge_answer: set[str] = field(default_factory=set)  # sign the final answer with a key nobody knows
    after_finish: Callable[[], None] | None = None  # runs when the hospitals are done, before the core checks

    @staticmethod
    def make(tmp: Path, names: tuple[str, ...] = ("a", "b", "c"), **extra: Any) -> Harness:
        cfg = config(tmp / "data", names, **extra)
        ring = make_keyring(tmp)
        store = CheckpointStore(MemoryObjectStore("primia-checkpoints"), cfg.federation_id, ring)
        ref = store.put_weights(0, co.initial_weights(cfg))
        store.commit(0, {"global.safetensors": ref})
        keys, roster = simulate(list(names), ring.public_key_b64(), store.store.bucket)
        return Harness(cfg, store, keys, roster)

    def global_ref(self) -> Any:
        return self.store.load_round(0).ref("global.safetensors")

    def revoke(self, hospital: str) -> None:
        entry = replace(self.roster.hospitals[hospital], status="revoked")
        self.roster = replace(self.roster, hospitals={**self.roster.hospitals, hospital: entry})

    def ask(self, chosen: list[str], train: bool = True, server_round: int = 1, global_ref: Any = None,
            validate: bool = True, stats: bool = False, absent: tuple[str, ...] = (), audit: bool = False
            ) -> RoundAnswers:
        _, signer = self.store.ring.signer()
        how = Asking(self.store, lambda _: self.store, lambda: self.roster.hospitals, signer.sign)
        ref = None if stats else (global_ref or self.global_ref())
        return ask(_Threads(self), self.cfg, server_round, ref, chosen, train, stats, how, absent=absent,
                   validate=validate, audit=audit)


class _Threads:
    def __init__(self, h: Harness) -> None:
        self.h, self.threads, self.errors = h, {}, {}  # type: ignore[var-annotated]

    def start(self, dispatches: dict[str, Dispatch]) -> dict[str, str]:
        for name, d in dispatches.items():
            t = threading.Thread(target=self._run, args=(name, d), daemon=True)
            self.threads[name] = t
            t.start()
        return {}

    def _run(self, name: str, d: Dispatch) -> None:
        h = self.h
        try:
            d = h.rogues[name](h, name, d) if name in h.rogues else d
            members = frozenset(h.roster.active())
            floors = Floors(members=members, min_parties=2, max_parties=h.cfg.secure_aggregation.max_hospitals)
            secure = hospital_side(h.store, h.store, d.secagg, name, h.keys[name].sign, h.roster.verifier(),
                                   h.roster.coordinator_check, floors, h.ledgers.setdefault(name, MemoryLedger()),
                                   d.expected(h.cfg.federation_id)) if d.secagg else None
            key = Ed25519PrivateKey.generate() if name in h.forge_answer else h.keys[name]
            hospital = next(x for x in h.cfg.hospitals if x.name == name)
            answer(hospital, key, h.store, h.store, d, h.cfg.local_spec(), secure)
        except Exception as exc:  # noqa: BLE001  # a hospital that gives up: the core sees its run end
            self.errors[name] = f"{type(exc).__name__}: {exc}"

    def gone(self) -> set[str]:
        return {n for n, t in self.threads.items() if not t.is_alive()}

    def finish(self, deadline: float) -> dict[str, str]:
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        if self.h.after_finish:
            self.h.after_finish()
        return {n: self.errors.get(n, "") for n in self.threads}


def entry(h: Harness, name: str) -> HospitalEntry:
    return h.roster.hospitals[name]
