"""A malicious coordinator against the real secure-aggregation clients (primia.secure.protocol.Client).

`split_view` plays the attack of the trust-hardening issue: the target is shown a roster U2 in which
(almost) nobody shared, so it masks its update with few or no pairwise masks; every other hospital
is shown the true U2 and a U3 with the target in it, and each group gets only its own confirmations.
The honest hospitals' revealed shares then give the target's self-mask seed (and the keys of the few
partners it masked with, presented to the others as dropped): its update, in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from primia.secure import inmemory
from primia.secure.agreement import pair_seed, unb64
from primia.secure.prg import apply_masks
from primia.secure.protocol import Client, Floors, Params, ProtocolViolation, SecAggAbort
from primia.secure.unmask import _reconstruct


@dataclass
class Attempt:
    target: str
    update: np.ndarray
    recovered: np.ndarray | None = None
    refusals: dict[str, str] = field(default_factory=dict)  # hospital -> why it would not go on
    target_b_shares_revealed: int = 0
    revealed: int = 0  # hospitals that revealed any share at all

    @property
    def leaked(self) -> bool:
        return self.recovered is not None and np.array_equal(self.recovered, self.update)


def setup(n: int, degree: int = 0, length: int = 64, seed: int = 0) -> tuple[Params, dict[str, Client], dict]:
    names = tuple(f"h{i:02d}" for i in range(n))
    params = Params("fed", 3, "attack", names, length, degree=degree, model="ab" * 32)
    signers, verify = inmemory.identities(names)
    floors = Floors(members=frozenset(names), max_parties=n)
    clients = {h: Client(params, h, signers[h], verify, floors, weights_digest="w") for h in names}
    rng = np.random.default_rng(seed)
    updates = {h: rng.integers(0, 2**32, length, dtype=np.uint64).astype(np.uint32) for h in names}
    return params, clients, updates


def split_view(n: int, degree: int = 0, seed: int = 0) -> Attempt:
    params, clients, updates = setup(n, degree, seed=seed)
    names, target = params.parties, params.parties[0]
    attempt = Attempt(target, updates[target])
    adverts = {h: c.advertise() for h, c in clients.items()}
    shares = {h: c.share(adverts) for h, c in clients.items()}
    g = params.graph({h: m["payload"] for h, m in adverts.items()})
    # the target's view of U2: only itself if it accepts that, else a bare majority far from its neighbours
    far = [h for h in names if h != target and h not in g.nbrs[target]]
    near = [h for h in names if h in g.nbrs[target]]
    y_t = None
    for u2_t in ([target], [target, *(far + near)[: len(names) // 2]]):
        try:
            y_t = clients[target].mask({h: shares[h] for h in u2_t}, updates[target].copy())
            break
        except SecAggAbort as exc:
            attempt.refusals[target] = str(exc)
            clients[target].u2 = frozenset()
    if y_t is None:
        return attempt
    masks = {target: clients[target].mask_message("target", 10)}
    revealers = [h for h in names if h not in u2_t]
    for h in revealers:
        clients[h].mask(shares, updates[h].copy())
        masks[h] = clients[h].mask_message(h, 10)
    confirms = {}
    for h in revealers:  # shown U3 = the revealers and the target: those the target masked with "dropped"
        try:
            confirms[h] = clients[h].confirm({m: masks[m] for m in [target, *revealers]})
        except (ProtocolViolation, SecAggAbort) as exc:
            attempt.refusals[h] = str(exc)
    reveals = {}
    for h in confirms:  # each group only gets its own group's confirmations
        try:
            reveals[h] = clients[h].unmask(confirms)
        except (ProtocolViolation, SecAggAbort) as exc:
            attempt.refusals[h] = str(exc)
    attempt.revealed = len(reveals)
    attempt.target_b_shares_revealed = sum(target in r["payload"]["b_shares"] for r in reveals.values())
    attempt.recovered = _unmask_one(params, g, target, y_t, set(u2_t) - {target}, adverts, shares, reveals)
    return attempt


def _unmask_one(params: Params, g: Any, target: str, y: np.ndarray, partners: set[str], adverts: dict,
                shares: dict, reveals: dict) -> np.ndarray | None:
    commits = {h: m["payload"]["commit"] for h, m in shares.items()}
    try:
        strip = [(_reconstruct(params, g, target, "b", reveals, commits, {}), -1)]
        s_pk_t = unb64(adverts[target]["payload"]["s_pk"])
        for j in sorted(partners & g.nbrs[target]):
            s_j = X25519PrivateKey.from_private_bytes(_reconstruct(params, g, j, "s", reveals, commits, {}))
            strip.append((pair_seed(params.ctx, j, s_j, target, s_pk_t), -(1 if target < j else -1)))
    except SecAggAbort:
        return None
    out = y.copy()
    apply_masks(out, strip)
    return out
