"""SecAgg / SecAgg+ as named stages over explicit state (Bonawitz et al. 2017; Bell et al. 2020).

Stages, each a message from every surviving hospital, then a roster from the coordinator:
  1 advertise  hospital: fresh X25519 pairs c (share boxes) and s (masks), public halves signed
               coordinator: roster U1 of hospitals whose signed keys verify
  2 share      hospital: verifies its neighbours' signed keys, Shamir-shares its self-mask seed b and
               its secret s key t-of-(neighbours+1), seals each neighbour's shares with AES-GCM
               coordinator: roster U2 of hospitals that shared
  3 mask       hospital: y = x + PRG(b) + sum_j +-PRG(s_ij) over neighbours j in U2, in Z_2^bits
               coordinator: roster U3 of hospitals that sent y (fewer than t: abort)
  4 confirm    hospital: signs the roster U3 it was given (Bonawitz's consistency check)
               coordinator: relays the signatures; a hospital reveals nothing unless at least t
               hospitals signed the very U3 it was given and t of its own neighbourhood are in U3
  5 unmask     hospital: for each neighbour j that shared with it, opens the box and reveals j's
               b-share if j sent y (j in U3), else j's s-key share (j dropped: its pairwise masks
               must be removed) - never both
               coordinator: reconstructs each b_j (j in U3) and each dropped s key from t shares,
               strips the masks: sum over U3 of x. Below t shares for any secret: abort.
The coordinator only ever holds masked vectors, their sum and the seeds the protocol reveals.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from primia.secure import graph, shamir
from primia.secure.agreement import (
    Context,
    TamperedShareError,
    b64,
    open_share,
    pair_seed,
    raw_private,
    raw_public,
    seal_share,
    unb64,
)
from primia.secure.prg import apply_masks, ring_dtype
from primia.signing import Verifier, canonical_json

Signer = Callable[[bytes], bytes]


class SecAggAbort(RuntimeError):  # noqa: N818  # an outcome of the protocol, not a programming error
    """The round cannot be unmasked safely (too few hospitals or shares); nothing partial is used."""


class ProtocolViolation(ValueError):  # noqa: N818
    """A message or roster breaks the protocol (bad signature, wrong round, inconsistent roster)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of one secure aggregation, fixed by the coordinator before stage 1."""

    federation: str
    round: int
    session: str  # fresh per attempt: binds every message and key to this one run of the protocol
    parties: tuple[str, ...]
    length: int  # ring elements per vector
    bits: int = 32
    degree: int = 0  # 0: automatic (complete graph up to 9 parties, then 2*ceil(log2 n))
    threshold_fraction: float = 0.5

    def __post_init__(self) -> None:
        ring_dtype(self.bits)
        if self.degree and self.degree < len(self.parties) - 1 and (self.degree < 2 or self.degree % 2):
            raise ProtocolViolation(f"SecAgg+ degree must be 0, even and >= 2, or >= parties-1, got {self.degree}")
        if not 0 < self.threshold_fraction < 1:
            raise ProtocolViolation(f"threshold_fraction must be in (0, 1), got {self.threshold_fraction}")
        if len(self.parties) < 2:
            raise ProtocolViolation(f"secure aggregation needs at least 2 hospitals, got {list(self.parties)}")
        if tuple(sorted(self.parties)) != self.parties:
            raise ProtocolViolation("parties must be sorted")

    @property
    def ctx(self) -> Context:
        return Context(f"{self.federation}/{self.session}", self.round)

    @property
    def k(self) -> int:
        return self.degree or graph.auto_degree(len(self.parties))

    @property
    def threshold(self) -> int:
        return graph.threshold(self.k + 1, self.threshold_fraction)

    def neighbours(self) -> dict[str, frozenset[str]]:
        seed = int.from_bytes(hashlib.sha256(self.ctx.info("graph", "", "")).digest()[:8], "big")
        return graph.neighbours(list(self.parties), self.k, seed)

    def index(self, party: str) -> int:
        return self.parties.index(party) + 1  # Shamir x-coordinate: never 0

    def to_dict(self) -> dict[str, Any]:
        return {"federation": self.federation, "round": self.round, "session": self.session,
                "parties": list(self.parties), "length": self.length, "bits": self.bits, "degree": self.degree,
                "threshold_fraction": self.threshold_fraction}

    @staticmethod
    def from_dict(data: Any) -> Params:
        """Parameters as received (a dispatch's `secagg.params`); anything malformed is a ProtocolViolation."""
        try:
            return Params(**{**data, "parties": tuple(data["parties"])})
        except (TypeError, KeyError, ValueError) as exc:
            if isinstance(exc, ProtocolViolation):
                raise
            raise ProtocolViolation(f"secure-aggregation parameters are malformed ({type(exc).__name__}: {exc}); "
                                    f"expected {sorted(Params.__dataclass_fields__)}") from None


# ------------------------------------------------------------------ signed messages
def sign(params: Params, stage: str, hospital: str, body: dict[str, Any], signer: Signer) -> dict[str, Any]:
    payload = {"stage": stage, "hospital": hospital, "federation": params.federation, "round": params.round,
               "session": params.session, **body}
    return {"payload": payload, "signature": b64(signer(canonical_json(payload)))}


def verified(params: Params, stage: str, message: dict[str, Any], verify: Verifier) -> dict[str, Any]:
    """The payload of a stage message after checking its signature, stage, round and session."""
    try:
        payload, signature = message["payload"], unb64(message["signature"])
        hospital = payload["hospital"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolViolation(f"malformed {stage} message: {exc}") from None
    expected = (stage, params.federation, params.round, params.session)
    got = (payload.get("stage"), payload.get("federation"), payload.get("round"), payload.get("session"))
    if got != expected:
        raise ProtocolViolation(f"{hospital}: {stage} message is for {got}, expected {expected}")
    if hospital not in params.parties:
        raise ProtocolViolation(f"{hospital}: not a party of this aggregation")
    if not verify(hospital, canonical_json(payload), signature):
        raise ProtocolViolation(f"{hospital}: {stage} message signature does not verify against the registered key")
    _check_body(stage, hospital, payload)
    return dict(payload)


_BODY: dict[str, dict[str, type]] = {
    "advertise": {"c_pk": str, "s_pk": str}, "share": {"boxes": dict}, "mask": {"sha256": str},
    "confirm": {"u3": list}, "unmask": {"b_shares": dict, "s_shares": dict, "bad": dict},
}


def _check_body(stage: str, hospital: str, payload: dict[str, Any]) -> None:
    """A signed message can still be malformed (a faulty hospital): reject it here, with a reason,
    rather than fail later inside another party's arithmetic."""
    for name, kind in _BODY.get(stage, {}).items():
        if not isinstance(payload.get(name), kind):
            raise ProtocolViolation(f"{hospital}: {stage} message needs {name!r} as a {kind.__name__}")
    if stage == "advertise":
        for name in ("c_pk", "s_pk"):
            try:
                key = unb64(payload[name])
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ProtocolViolation(f"{hospital}: advertised {name} is not a base64 32-byte X25519 key")


# ------------------------------------------------------------------ hospital side
@dataclass
class Client:
    """One hospital's private protocol state; it never leaves the hospital."""

    params: Params
    me: str
    signer: Signer
    verify: Verifier
    c_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    s_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    b_seed: bytes = field(default_factory=lambda: os.urandom(32))
    peers: dict[str, dict[str, bytes]] = field(default_factory=dict)  # neighbour -> {"c": pk, "s": pk}
    shared_with_me: dict[str, dict[str, Any]] = field(default_factory=dict)  # sender -> its box for me
    u2: frozenset[str] = frozenset()
    u3: frozenset[str] = frozenset()
    bad: dict[str, str] = field(default_factory=dict)  # senders whose shares for me are missing or tampered
    own_shares: tuple[shamir.Share, shamir.Share] | None = None  # this hospital's own (b, s) shares

    def __post_init__(self) -> None:
        if self.me not in self.params.parties:
            raise ProtocolViolation(f"{self.me} is not a party of round {self.params.round}")

    def advertise(self) -> dict[str, Any]:
        body = {"c_pk": b64(raw_public(self.c_key)), "s_pk": b64(raw_public(self.s_key))}
        return sign(self.params, "advertise", self.me, body, self.signer)

    def share(self, adverts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 2, given roster U1 (the coordinator's list of signed adverts; each re-verified here)."""
        mine = self.params.neighbours()[self.me]
        for peer, message in adverts.items():
            if peer in mine:
                payload = verified(self.params, "advertise", message, self.verify)
                if payload["hospital"] != peer:
                    raise ProtocolViolation(f"roster lists {peer}'s advert signed by {payload['hospital']}")
                self.peers[peer] = {"c": unb64(payload["c_pk"]), "s": unb64(payload["s_pk"])}
        if self.me not in adverts:
            raise ProtocolViolation(f"{self.me} is missing from roster U1")
        holders = sorted([*self.peers, self.me])
        t = self.params.threshold
        if len(holders) < t:
            raise SecAggAbort(f"{self.me}: only {len(holders)} of its neighbours advertised keys, threshold is {t}")
        xs = [self.params.index(h) for h in holders]
        b_shares = shamir.split(self.b_seed, xs, t)
        s_shares = shamir.split(raw_private(self.s_key), xs, t)
        boxes = {}
        for peer in self.peers:
            x = self.params.index(peer)
            plain = b_shares[x].to_bytes() + s_shares[x].to_bytes()
            boxes[peer] = seal_share(self.params.ctx, self.me, self.c_key, peer, self.peers[peer]["c"], plain)
        x_me = self.params.index(self.me)
        self.own_shares = (b_shares[x_me], s_shares[x_me])
        return sign(self.params, "share", self.me, {"boxes": boxes}, self.signer)

    def mask(self, shares: dict[str, dict[str, Any]], vector: np.ndarray) -> np.ndarray:
        """Stage 3, given roster U2 (the share messages of everyone who shared): the masked vector.
        Masks `vector` in place (the hospital's encoded update, of no use afterwards: no second copy of
        a model-sized array). Its signed message (`mask_message`) follows once the transport knows the
        vector's digest."""
        if self.me not in shares:
            raise ProtocolViolation(f"{self.me} is missing from roster U2")
        if vector.dtype != ring_dtype(self.params.bits) or vector.shape != (self.params.length,):
            raise ProtocolViolation(f"vector must be {self.params.length} elements of Z_2^{self.params.bits}")
        for sender, message in shares.items():
            if sender in self.peers:
                payload = verified(self.params, "share", message, self.verify)
                box = payload["boxes"].get(self.me) if payload["hospital"] == sender else None
                if box is None:  # its shares for me are missing: the others' shares must do
                    self.bad[sender] = f"{sender} shared but sent nothing to its neighbour {self.me}"
                else:
                    self.shared_with_me[sender] = box
        self.u2 = frozenset(shares)
        masks = [(self.b_seed, 1)] + [
            (pair_seed(self.params.ctx, self.me, self.s_key, peer, self.peers[peer]["s"]), 1 if self.me < peer else -1)
            for peer in sorted(self.u2 & set(self.peers))]
        apply_masks(vector, masks)
        return vector

    def mask_message(self, sha256: str) -> dict[str, Any]:
        return sign(self.params, "mask", self.me, {"sha256": sha256, "length": self.params.length}, self.signer)

    def confirm(self, survivors: list[str]) -> dict[str, Any]:
        """Stage 4, given roster U3 (who sent a masked vector): sign it, so a coordinator that tells
        different hospitals different rosters (to unmask one hospital's vector) is caught."""
        u3 = frozenset(survivors)
        if not u3 <= self.u2 or self.me not in u3:
            raise ProtocolViolation(f"{self.me}: roster U3 {sorted(u3)} is not a subset of U2 containing it")
        mine = (self.params.neighbours()[self.me] | {self.me}) & u3
        if len(u3) < self.params.threshold or len(mine) < self.params.threshold:
            raise SecAggAbort(f"{self.me}: only {len(mine)} of its neighbourhood sent masked vectors, threshold is "
                              f"{self.params.threshold}")
        self.u3 = u3
        return sign(self.params, "confirm", self.me, {"u3": sorted(u3)}, self.signer)

    def unmask(self, confirmations: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 5, given the coordinator's relay of confirmations: when at least t hospitals of U3 signed
        the same U3, reveal b-shares of survivors and s-shares of those who shared but sent no vector;
        never both for one hospital."""
        agreeing = set()
        for h, message in confirmations.items():
            payload = verified(self.params, "confirm", message, self.verify)
            if payload["hospital"] != h or h not in self.u3:
                raise ProtocolViolation(f"{self.me}: confirmation of {h} is not from a member of U3")
            if frozenset(payload["u3"]) != self.u3:
                raise ProtocolViolation(f"{self.me}: {h} was given a different U3: the coordinator is inconsistent")
            agreeing.add(h)
        if self.me not in agreeing or len(agreeing) < self.params.threshold:
            raise SecAggAbort(f"{self.me}: only {len(agreeing)} hospitals confirmed U3, threshold is "
                              f"{self.params.threshold}")
        if self.own_shares is None:
            raise ProtocolViolation(f"{self.me}: unmask before share")
        b_out, s_out, bad = {self.me: _hex(self.own_shares[0])}, {}, dict(self.bad)
        for sender, box in self.shared_with_me.items():
            try:
                plain = open_share(self.params.ctx, sender, self.peers[sender]["c"], self.me, self.c_key, box)
            except TamperedShareError as exc:
                bad[sender] = str(exc)
                continue
            half = len(plain) // 2
            if sender in self.u3:
                b_out[sender] = plain[:half].hex()
            else:
                s_out[sender] = plain[half:].hex()
        body = {"b_shares": b_out, "s_shares": s_out, "bad": bad}
        return sign(self.params, "unmask", self.me, body, self.signer)


def _hex(share: shamir.Share) -> str:
    return share.to_bytes().hex()


# ------------------------------------------------------------------ coordinator side
@dataclass(frozen=True)
class Unmasked:
    total: np.ndarray  # the sum over `included` of their vectors, in Z_2^bits
    included: tuple[str, ...]  # sent a masked vector (U3): their inputs are in the sum
    recovered: tuple[str, ...]  # of those, dropped before unmasking: self-masks rebuilt from shares
    excluded: tuple[str, ...]  # shared keys but sent no vector: their pairwise masks were removed


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


def require(params: Params, stage: str, survivors: set[str] | frozenset[str]) -> None:
    if len(survivors) < params.threshold:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round} at stage {stage}: "
                          f"{len(survivors)} of {len(params.parties)} hospitals remain, threshold is "
                          f"{params.threshold}; no partial model is stored")


def unmask_sum(params: Params, adverts: dict[str, dict[str, Any]], shared: frozenset[str],
               vectors: dict[str, np.ndarray], reveals: dict[str, dict[str, Any]]) -> Unmasked:
    """Sum the masked vectors of U3 and strip every mask, from the shares the survivors revealed."""
    u3 = frozenset(vectors)
    require(params, "unmask", set(reveals))
    nbrs = params.neighbours()
    total = np.zeros(params.length, dtype=ring_dtype(params.bits))
    for y in vectors.values():
        np.add(total, y, out=total)
    masks = [(_reconstruct(params, j, "b_shares", reveals), -1) for j in sorted(u3)]  # everyone's self-mask
    for j in sorted(shared - u3):  # shared keys, sent no vector: its partners' pairwise masks remain
        s_key = X25519PrivateKey.from_private_bytes(_reconstruct(params, j, "s_shares", reveals))
        if raw_public(s_key) != unb64(adverts[j]["payload"]["s_pk"]):
            raise SecAggAbort(f"secure aggregation aborted in round {params.round}: {j}'s mask key rebuilt from "
                              f"shares does not match its signed public key; no partial model is stored")
        for k in sorted(nbrs[j] & u3):
            s_pk_k = unb64(adverts[k]["payload"]["s_pk"])
            masks.append((pair_seed(params.ctx, j, s_key, k, s_pk_k), -1 if k < j else 1))
    apply_masks(total, masks)
    recovered = tuple(sorted(u3 - set(reveals)))
    return Unmasked(total, tuple(sorted(u3)), recovered, tuple(sorted(shared - u3)))


def _reconstruct(params: Params, owner: str, kind: str, reveals: dict[str, dict[str, Any]]) -> bytes:
    """The owner's secret from the revealed shares of its holders (its neighbours and itself); a share
    that claims another holder's index, or one from a non-holder, is not used."""
    holders = params.neighbours()[owner] | {owner}
    shares = []
    for revealer, r in reveals.items():
        text = r["payload"][kind].get(owner)
        if text is None or revealer not in holders:
            continue
        try:
            share = shamir.Share.from_bytes(bytes.fromhex(text))
        except (ValueError, shamir.ShamirError):
            continue
        if share.x == params.index(revealer):
            shares.append(share)
    what = "self-mask seed" if kind == "b_shares" else "mask key"
    if len(shares) < params.threshold:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round}: only {len(shares)} valid shares of "
                          f"{owner}'s {what} were revealed, threshold is {params.threshold}; no partial model "
                          f"is stored")
    try:
        return shamir.combine(shares, params.threshold)
    except shamir.ShamirError as exc:
        raise SecAggAbort(f"secure aggregation aborted in round {params.round}: {owner}'s {what} does not "
                          f"reconstruct ({exc}); no partial model is stored") from None


def decode_vector(data: bytes, params: Params) -> np.ndarray:
    dtype = np.dtype(ring_dtype(params.bits))
    if len(data) != params.length * dtype.itemsize:
        raise ProtocolViolation(f"masked vector has {len(data)} bytes, expected {params.length * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype)

