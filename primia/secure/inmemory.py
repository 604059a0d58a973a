"""Run the whole protocol in one process: for tests, the benchmark and known-answer checks.

Every message still goes through signing, verification, sealing and the same stage functions as the
distributed path; only the transport (the object store) is replaced by dictionaries.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from primia.secure.protocol import Client, Floors, Params, Signer, sign
from primia.secure.unmask import Unmasked, accept, consistent_shares, require, unmask_sum
from primia.signing import Verifier, verifier_for


def identities(parties: list[str] | tuple[str, ...]) -> tuple[dict[str, Signer], Verifier]:
    """Fresh Ed25519 keys per party (a simulation's stand-in for the registry)."""
    keys = {p: Ed25519PrivateKey.generate() for p in parties}
    publics = {p: base64.b64encode(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
               for p, k in keys.items()}
    return {p: k.sign for p, k in keys.items()}, verifier_for(publics)


def coordinator_identity() -> tuple[Signer, Callable[[bytes, bytes], bool]]:
    """A fresh coordinator key: its signer and the check hospitals make against its public half."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    check = verifier_for({"coordinator": public})
    return key.sign, lambda message, signature: check("coordinator", message, signature)


@dataclass
class Faults:
    """Who stops where (names), and shares to corrupt in transit: (sender, recipient)."""

    before_share: set[str] = field(default_factory=set)
    before_mask: set[str] = field(default_factory=set)
    before_unmask: set[str] = field(default_factory=set)
    tamper: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Run:
    result: Unmasked
    client_s: dict[str, dict[str, float]]  # each hospital's protocol time per stage
    server_s: float  # the coordinator's unmasking (sum, reconstruction, mask removal)
    masked: dict[str, np.ndarray]  # what the coordinator received from each hospital


def run(params: Params, vectors: dict[str, np.ndarray], faults: Faults | None = None,
        keys: tuple[dict[str, Signer], Verifier] | None = None,
        on_masked: Callable[[str, np.ndarray], None] | None = None,
        on_reveal: Callable[[str, dict[str, Any]], None] | None = None,
        floors: Floors | None = None) -> Run:
    faults = faults or Faults()
    signers, verify = keys or identities(params.parties)
    floors = floors or Floors(min_parties=2)
    clients = {p: Client(params, p, signers[p], verify, floors, weights_digest="in-memory") for p in params.parties}
    spent: dict[str, dict[str, float]] = {p: {} for p in params.parties}

    def timed(p: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        spent[p][fn.__name__] = time.perf_counter() - start
        return out

    adverts = {p: timed(p, c.advertise) for p, c in clients.items()}
    u1, _ = accept(params, "advertise", adverts, verify, frozenset(params.parties))
    require(params, "advertise", set(u1), 2)
    g = params.graph({h: m["payload"] for h, m in u1.items()})
    alive = [p for p in u1 if p not in faults.before_share]
    shares = {p: timed(p, clients[p].share, u1) for p in alive}
    for sender, recipient in faults.tamper:  # a faulty sender: its signature is valid, the box is not
        body = dict(shares[sender]["payload"])
        boxes = dict(body["boxes"])
        ct = boxes[recipient]["ct"]
        boxes[recipient] = {**boxes[recipient], "ct": ct[:-8] + ("AAAAAAAA" if ct[-8:] != "AAAAAAAA" else "BBBBBBBB")}
        shares[sender] = sign(params, "share", sender, {"boxes": boxes, "commit": body["commit"], "u1": body["u1"]},
                              signers[sender])
    u2, _ = accept(params, "share", shares, verify, frozenset(u1))
    u2, _ = consistent_shares(g, u2)
    require(params, "share", set(u2), g.threshold)
    masked: dict[str, np.ndarray] = {}
    masks: dict[str, dict[str, Any]] = {}
    for p in [p for p in u2 if p not in faults.before_mask]:
        masked[p] = timed(p, clients[p].mask, u2, vectors[p].copy())  # masked in place: keep the caller's
        masks[p] = clients[p].mask_message(f"in-memory-{p}", 1)
        if on_masked:
            on_masked(p, masked[p])
    require(params, "mask", set(masked), g.threshold)
    confirms = {p: timed(p, clients[p].confirm, masks) for p in masked if p not in faults.before_unmask}
    confirms, _ = accept(params, "confirm", confirms, verify, frozenset(masked))
    require(params, "confirm", set(confirms), floors.confirm_quorum(len(params.parties)))
    reveals = {p: timed(p, clients[p].unmask, confirms) for p in confirms}
    for p, message in reveals.items():
        if on_reveal:
            on_reveal(p, message)
    reveals, _ = accept(params, "unmask", reveals, verify, frozenset(masked))
    start = time.perf_counter()
    result = unmask_sum(params, u1, u2, masked, reveals, masks)
    return Run(result, spent, time.perf_counter() - start, masked)
