"""The model owner and the dealer as separate local processes, for a data owner in this one.

What `primia infer --encrypted` runs without endpoints, and what `primia bench smpc` times: the three
parties in three processes on loopback TCP, with throwaway keys made for the run (all three live on this
machine, so a roster would prove nothing more). Each server process gets only its own private key.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from primia.errors import PrimiaError
from primia.smpc.parties import DATA_OWNER, DEALER, MODEL_OWNER, Parties, identity, throwaway
from primia.smpc.service import Card, Endpoints, Served, dealer_server, model_owner_server

START_S = 180.0  # a spawned process imports torch (and MLflow) before it listens


@dataclass(frozen=True)
class Source:
    """Where the model owner's model comes from: a registry URI, or (benches, tests) an architecture's seeded
    initialisation with a fixed input standardisation."""

    uri: str = ""
    seeded: str = ""
    size: int = 64

    def load(self) -> Served:
        if self.uri:
            from primia.smpc.champion import load_served

            return load_served(self.uri)
        return seeded_model(self.seeded, self.size)


def seeded_model(name: str, size: int) -> Served:
    from primia.models.factory import build_model, set_input_normalization

    model = build_model(name, num_classes=2, in_channels=1, seed=0).eval()
    set_input_normalization(model, 0.35, 0.25)
    return Served(model, Card(name, 2, 1, size, ("class0", "class1"), f"seeded:{name}"))


def _serve(role: str, parties: Parties, key: bytes, source: Source | None, dealer: Any, out: Any,
           timeout_s: float) -> None:
    torch.set_num_threads(1)  # one core each: the two parties compute at once on this machine
    try:
        me = identity(role, key)
        if role == DEALER:
            server = dealer_server(("127.0.0.1", 0), me, parties, timeout_s)
        else:
            assert source is not None
            server = model_owner_server(("127.0.0.1", 0), me, parties, source.load(), {DEALER: dealer}, timeout_s)
    except Exception as exc:
        out.put(("error", f"{role}: {type(exc).__name__}: {exc}"))
        return
    out.put(("ready", server.address))
    server.serve()


def _started(proc: Any, out: Any, role: str) -> Any:
    kind, value = out.get(timeout=START_S)
    if kind != "ready":
        raise PrimiaError(f"the local {role} did not start: {value}")
    return value


@contextmanager
def local_parties(source: Source, timeout_s: float = 120.0) -> Iterator[tuple[Any, Parties, Endpoints]]:
    """(the data owner's identity, the parties, where the servers listen) while both servers run."""
    parties, private = throwaway()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    try:
        procs.append(ctx.Process(target=_serve, args=(DEALER, parties, private[DEALER], None, None, out, timeout_s),
                                 daemon=True, name="primia-smpc-dealer"))
        procs[-1].start()
        dealer_at = tuple(_started(procs[-1], out, DEALER))
        procs.append(ctx.Process(target=_serve, args=(MODEL_OWNER, parties, private[MODEL_OWNER], source, dealer_at,
                                                      out, timeout_s), daemon=True, name="primia-smpc-model-owner"))
        procs[-1].start()
        mo_at = tuple(_started(procs[-1], out, MODEL_OWNER))
        yield (identity(DATA_OWNER, private[DATA_OWNER]), parties,
               Endpoints((MODEL_OWNER, mo_at), (DEALER, dealer_at)))  # type: ignore[arg-type]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
