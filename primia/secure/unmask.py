"""The coordinator's side of the protocol: accept stage messages, and from the revealed shares that match
their owners' commitments strip every mask off the sum of U3's vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from primia.secure import shamir
from primia.secure.agreement import pair_seed, raw_public, unb64
from primia.secure.plan import Graph, Params, ProtocolViolation, SecAggAbort
from primia.secure.prg import apply_masks, ring_dtype
from primia.secure.protocol import commitment, verified
from primia.signing import Verifier


@dataclass(frozen=True)
class Unmasked:
    total: np.ndarray  # the sum over `included` of their vectors, in Z_2^bits
    included: tuple[str, ...]  # sent a masked vector (U3): their inputs are in the sum
    recovered: tuple[str, ...]  # of those, dropped before unmasking: self-masks rebuilt from shares
    excluded: tuple[str, ...]  # shared keys but sent no vector: their pairwise masks were removed
    k: int = 0
    threshold: int = 0
    weight_bound: int = 0  # sum of the weight bounds the included hospitals signed
    members: int = 0  # hospitals in U1 (the graph's size)
    bad_shares: dict[str, str] = field(default_factory=dict)  # revealers whose shares failed their commitment


def accept(params: Params, stage: str, messages: dict[str, dict[str, Any]], verify: Verifier,
           allowed: frozenset[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The stage messages that verify (from hospitals still in the protocol) and reasons for the rest."""
    good, rejected = {}, {}
    for hospital, message in messages.items():
        try:
            payload = verified(params, stage, message, verify)
            if payload["hospital"] != hospital or hospital not in allowed:
                raise ProtocolViolation(f"{hospital}: not expected at stage {stage}")
            good[hospital] = message
        except ProtocolViolation as exc:
            rejected[hospital] = str(exc)
    return good, rejected


def require(params: Params, stage: str, survivors: set[str] | frozenset[str], threshold: int | None = None) -> None:
    need = params.threshold if threshold is None else threshold
    if len(survivors) < need:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round} at stage {stage}: "
                          f"{len(survivors)} of {len(params.parties)} hospitals remain, {need} are needed; "
                          f"no partial model is stored")


def consistent_shares(g: Graph, shares: dict[str, dict[str, Any]]
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Share messages made under this U1, and reasons for the others (the coordinator's side of the
    check every hospital makes at stage 3)."""
    good = {h: m for h, m in shares.items() if m["payload"].get("u1") == g.digest}
    return good, {h: f"{h}: shared under another roster U1" for h in shares if h not in good}


def unmask_sum(params: Params, adverts: dict[str, dict[str, Any]], shares: dict[str, dict[str, Any]],
               vectors: dict[str, np.ndarray], reveals: dict[str, dict[str, Any]],
               masks: dict[str, dict[str, Any]] | None = None) -> Unmasked:
    """Sum the masked vectors of U3 and strip every mask, from the revealed shares that match their
    owners' signed commitments."""
    g = params.graph({h: m["payload"] for h, m in adverts.items()})
    u3, shared = frozenset(vectors), frozenset(shares)
    require(params, "unmask", set(reveals), g.threshold)
    commits = {h: m["payload"]["commit"] for h, m in shares.items()}
    bad: dict[str, str] = {}
    total = np.zeros(params.length, dtype=ring_dtype(params.bits))
    for y in vectors.values():
        np.add(total, y, out=total)
    strip = [(_reconstruct(params, g, j, "b", reveals, commits, bad), -1) for j in sorted(u3)]  # self-masks
    for j in sorted(shared - u3):  # shared keys, sent no vector: its partners' pairwise masks remain
        s_key = X25519PrivateKey.from_private_bytes(_reconstruct(params, g, j, "s", reveals, commits, bad))
        if raw_public(s_key) != unb64(adverts[j]["payload"]["s_pk"]):
            raise SecAggAbort(f"secure aggregation aborted in round {params.round}: {j}'s mask key rebuilt from "
                              f"shares does not match its signed public key; no partial model is stored")
        for k in sorted(g.nbrs[j] & u3):
            s_pk_k = unb64(adverts[k]["payload"]["s_pk"])
            strip.append((pair_seed(params.ctx, j, s_key, k, s_pk_k), -1 if k < j else 1))
    apply_masks(total, strip)
    recovered = tuple(sorted(u3 - set(reveals)))
    bound = sum(int(masks[h]["payload"]["weight_bound"]) for h in u3) if masks else 0
    return Unmasked(total, tuple(sorted(u3)), recovered, tuple(sorted(shared - u3)), g.k, g.threshold, bound,
                    len(g.members), bad)


def _reconstruct(params: Params, g: Graph, owner: str, kind: str, reveals: dict[str, dict[str, Any]],
                 commits: dict[str, dict[str, list[str]]], bad: dict[str, str]) -> bytes:
    """The owner's secret from the revealed shares of its holders (its neighbours and itself); a share
    from a non-holder, under another holder's index or not matching the owner's commitment is not used."""
    holders = g.nbrs[owner] | {owner}
    field_name, slot = ("b_shares", 0) if kind == "b" else ("s_shares", 1)
    shares = []
    for revealer, r in reveals.items():
        text = r["payload"][field_name].get(owner)
        if text is None or revealer not in holders:
            continue
        try:
            raw = bytes.fromhex(text)
            share = shamir.Share.from_bytes(raw)
        except (ValueError, TypeError, shamir.ShamirError):
            bad[revealer] = f"{revealer} revealed a malformed share of {owner}'s secret"
            continue
        committed = commits.get(owner, {}).get(revealer) if isinstance(commits.get(owner), dict) else None
        matches = isinstance(committed, list) and len(committed) == 2 and \
            committed[slot] == commitment(params, owner, kind, raw)
        if share.x != params.index(revealer) or not matches:
            bad[revealer] = f"{revealer} revealed a share of {owner}'s secret that does not match its commitment"
            continue
        shares.append(share)
    what = "self-mask seed" if kind == "b" else "mask key"
    if len(shares) < g.threshold:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round}: only {len(shares)} valid shares of "
                          f"{owner}'s {what} were revealed, threshold is {g.threshold}; no partial model is stored")
    try:
        return shamir.combine(shares, g.threshold)
    except shamir.ShamirError as exc:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round}: {owner}'s {what} does not "
                          f"reconstruct ({exc}); no partial model is stored") from None


def decode_vector(data: bytes | memoryview, params: Params) -> np.ndarray:
    dtype = np.dtype(ring_dtype(params.bits))
    if len(data) != params.length * dtype.itemsize:
        raise ProtocolViolation(f"masked vector has {len(data)} bytes, expected {params.length * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype)

