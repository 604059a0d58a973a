"""SecAgg / SecAgg+ as named stages over explicit state (Bonawitz et al. 2017; Bell et al. 2020),
hardened against a malicious coordinator.

Stages, each a message from every surviving hospital, then a roster from the coordinator:
  1 advertise  hospital: fresh X25519 pairs c (share boxes) and s (masks), public halves signed
               coordinator: roster U1 of hospitals whose signed keys verify
  2 share      hospital: verifies every advert of U1 and draws the SecAgg+ graph from their hash (the
               randomness all parties contribute, not the coordinator's); Shamir-shares its self-mask
               seed b and its secret s key t-of-(neighbours+1), seals each neighbour's shares with
               AES-GCM and signs a hash commitment to every share and the U1 it saw
               coordinator: roster U2 of hospitals that shared
  3 mask       hospital: y = x + PRG(b) + sum_j +-PRG(s_ij) over neighbours j in U2, in Z_2^bits
               coordinator: roster U3 of hospitals that sent y
  4 confirm    hospital: signs the (U1, U2, U3) it was given (Bonawitz's consistency check)
  5 unmask     hospital: reveals nothing unless a strict majority of the round's parties (more, when it
               assumes colluders) signed the very (U1, U2, U3) it was given - two views can then not
               both pass - and it has helped unmask no other sum from the same global model. Then, for
               each neighbour j that shared with it, j's b-share if j sent y (j in U3), else j's s-key
               share (j dropped: its pairwise masks must be removed) - never both
               coordinator: reconstructs each b_j (j in U3) and each dropped s key from t shares that
               match their owner's signed commitments, strips the masks: sum over U3 of x.
Hospital-side floors (`Floors`) hold whatever the coordinator plans: enough parties, all of them in
the signed roster, no more than the ring bound allows, a threshold and a graph degree not below the
automatic ones. The coordinator only ever holds masked vectors, their sum and the seeds the protocol reveals.
Parameters and floors are in `plan`, the coordinator's arithmetic in `unmask`; this module holds the
signed messages and the hospital's state machine.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from primia.secure import shamir
from primia.secure.agreement import (
    TamperedShareError,
    b64,
    open_share,
    pair_seed,
    raw_private,
    raw_public,
    seal_share,
    unb64,
)
from primia.secure.plan import (  # noqa: F401  (Params, Floors and the outcomes are the protocol's vocabulary)
    PURPOSES,
    Floors,
    Graph,
    Ledger,
    Params,
    ProtocolViolation,
    SecAggAbort,
    Signer,
)
from primia.secure.prg import apply_masks, ring_dtype
from primia.signing import Verifier, canonical_json


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
        raise ProtocolViolation(f"{hospital}: {stage} message signature does not verify against the roster's key")
    _check_body(stage, hospital, payload)
    return dict(payload)


_BODY: dict[str, dict[str, type]] = {
    "advertise": {"c_pk": str, "s_pk": str, "plan": str}, "share": {"boxes": dict, "commit": dict, "u1": str},
    "mask": {"digest": str, "weight_bound": int, "u1": str, "u2": str}, "confirm": {"u1": str, "u2": list, "u3": list},
    "unmask": {"b_shares": dict, "s_shares": dict, "bad": dict},
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
    if not _nested_ok(stage, payload):
        raise ProtocolViolation(f"{hospital}: {stage} message is malformed inside (expected strings where it has "
                                f"other values)")


def _strs(d: Any) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())


def _nested_ok(stage: str, payload: dict[str, Any]) -> bool:
    """The shapes inside a message, so no party's arithmetic meets a number where a hex string belongs."""
    if stage == "share":
        return all(isinstance(b, dict) and _strs(b) for b in payload["boxes"].values()) and all(
            isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c)
            for c in payload["commit"].values())
    if stage == "mask":
        bound = payload["weight_bound"]
        return not isinstance(bound, bool) and bound > 0
    if stage == "confirm":
        return all(isinstance(h, str) for h in (*payload["u2"], *payload["u3"]))
    if stage == "unmask":
        return _strs(payload["b_shares"]) and _strs(payload["s_shares"]) and _strs(payload["bad"])
    return True


def plan_digest(params: Params) -> str:
    return hashlib.sha256(canonical_json(params.to_dict())).hexdigest()


def roster_digest(members: frozenset[str] | set[str]) -> str:
    return hashlib.sha256(canonical_json({"members": sorted(members)})).hexdigest()


def check_masks(params: Params, g: Graph, u2: frozenset[str], masks: Mapping[str, dict[str, Any]],
                verify: Verifier) -> None:
    """Every vector in U3 was masked under the U1 and U2 the checking hospital holds (its sender signed
    which): a hospital shown a smaller U2 masks with fewer partners, whose keys the others would then
    reveal as if they had dropped."""
    for h, message in masks.items():
        payload = verified(params, "mask", message, verify)
        if payload["hospital"] != h:
            raise ProtocolViolation(f"roster U3 lists {h}'s mask message signed by {payload['hospital']}")
        if payload["u1"] != g.digest or payload["u2"] != roster_digest(u2):
            raise ProtocolViolation(f"{h} masked its update under another roster U1/U2: the coordinator is "
                                    f"inconsistent; nothing is revealed")


def commitment(params: Params, owner: str, kind: str, share: bytes) -> str:
    """A hash commitment to one Shamir share (shares are uniform field elements: nothing leaks)."""
    return hashlib.sha256(params.ctx.info(f"primia-secagg-commit-{kind}-v1", owner, owner) + share).hexdigest()


def _advert_payload(hospital: str, message: Any) -> dict[str, Any]:
    """An advert's public keys for hashing U1 (not yet verified: see Client.share)."""
    try:
        payload = message["payload"]
        if payload["hospital"] != hospital or not isinstance(payload["c_pk"], str) or \
                not isinstance(payload["s_pk"], str):
            raise ValueError("malformed")
        return dict(payload)
    except (KeyError, TypeError, ValueError):
        raise ProtocolViolation(f"roster U1 lists a malformed advert for {hospital}") from None


def verified_adverts(params: Params, adverts: Mapping[str, dict[str, Any]], verify: Verifier
                     ) -> dict[str, dict[str, Any]]:
    payloads = {}
    for peer, message in adverts.items():
        payload = verified(params, "advertise", message, verify)
        if payload["hospital"] != peer:
            raise ProtocolViolation(f"roster lists {peer}'s advert signed by {payload['hospital']}")
        payloads[peer] = payload
    return payloads


# ------------------------------------------------------------------ hospital side
def second_sum(key: str, held: list[str], session: str, members: list[str]) -> ProtocolViolation:
    """Why a hospital refuses to help unmask a second sum from the same global model."""
    return ProtocolViolation(f"already helped unmask a sum over {', '.join(held)} from this global model ({key}, "
                             f"session {session}): a second sum over {', '.join(members)} would reveal the "
                             f"difference; refused")


class MemoryLedger:
    """A ledger for one process's lifetime (tests and embedded simulations); agents keep a file."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[list[str], str]] = {}

    def claim(self, key: str, members: list[str], session: str) -> None:
        held = self.claims.setdefault(key, (members, session))
        if held[0] != members:
            raise second_sum(key, held[0], held[1], members)


@dataclass
class Client:
    """One hospital's private protocol state; it never leaves the hospital."""

    params: Params
    me: str
    signer: Signer
    verify: Verifier
    floors: Floors = field(default_factory=Floors)
    ledger: Ledger = field(default_factory=MemoryLedger)
    c_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    s_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    b_seed: bytes = field(default_factory=lambda: os.urandom(32))
    graph: Graph | None = None
    peers: dict[str, dict[str, bytes]] = field(default_factory=dict)  # neighbour -> {"c": pk, "s": pk}
    shared_with_me: dict[str, dict[str, Any]] = field(default_factory=dict)  # sender -> its box for me
    u2: frozenset[str] = frozenset()
    u3: frozenset[str] = frozenset()
    bad: dict[str, str] = field(default_factory=dict)  # senders whose shares for me are missing or tampered
    own_shares: tuple[shamir.Share, shamir.Share] | None = None  # this hospital's own (b, s) shares
    weights_digest: str = ""  # of the global model's weights as decrypted here: keys the ledger

    def __post_init__(self) -> None:
        self.floors.check_plan(self.params, self.me)

    def advertise(self) -> dict[str, Any]:
        """The fresh public keys, with the digest of the plan this hospital accepted: every party checks
        that everyone in U1 accepted the very same plan (parties, degree, threshold, model, purpose)."""
        body = {"c_pk": b64(raw_public(self.c_key)), "s_pk": b64(raw_public(self.s_key)),
                "plan": plan_digest(self.params)}
        return sign(self.params, "advertise", self.me, body, self.signer)

    def share(self, adverts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 2, given roster U1 (the coordinator's list of signed adverts; each re-verified here)."""
        if self.me not in adverts:
            raise ProtocolViolation(f"{self.me} is missing from roster U1")
        own = verified(self.params, "advertise", adverts[self.me], self.verify)
        if (own["c_pk"], own["s_pk"]) != (b64(raw_public(self.c_key)), b64(raw_public(self.s_key))):
            raise ProtocolViolation(f"{self.me}: roster U1 carries another advert in its name")
        payloads = {h: _advert_payload(h, m) for h, m in adverts.items()}
        other_plans = sorted(h for h, pl in payloads.items() if pl.get("plan") != plan_digest(self.params))
        if other_plans:
            raise ProtocolViolation(f"{self.me}: {', '.join(other_plans)} advertised under another plan: the "
                                    f"coordinator is inconsistent")
        g = self.graph = self.params.graph(payloads)
        # Only the neighbours' signatures matter to this hospital (log n of them): a forged advert of
        # anyone else is caught by that party's own neighbours, and the U1 digest in every share and
        # confirm message makes any hospital that saw another U1 refuse.
        payloads |= verified_adverts(self.params, {p: adverts[p] for p in g.nbrs[self.me]}, self.verify)
        if len(g.members) < self.floors.min_sum:
            raise SecAggAbort(f"{self.me}: only {len(g.members)} hospitals advertised keys, this hospital needs at "
                              f"least {self.floors.min_sum} in a sum")
        mine = g.nbrs[self.me]
        self.peers = {p: {"c": unb64(payloads[p]["c_pk"]), "s": unb64(payloads[p]["s_pk"])} for p in mine}
        holders = sorted([*self.peers, self.me])
        if len(holders) < g.threshold:
            raise SecAggAbort(f"{self.me}: only {len(holders)} of its neighbourhood advertised keys, threshold is "
                              f"{g.threshold}")
        if g.threshold <= self.floors.colluders:  # the colluders among its holders could rebuild both its seeds
            raise ProtocolViolation(f"{self.me}: threshold {g.threshold} is not above the {self.floors.colluders} "
                                    f"colluders this hospital assumes: refused")
        xs = [self.params.index(h) for h in holders]
        b_shares = shamir.split(self.b_seed, xs, g.threshold)
        s_shares = shamir.split(raw_private(self.s_key), xs, g.threshold)
        boxes, commit = {}, {}
        for holder in holders:
            x = self.params.index(holder)
            b, s = b_shares[x].to_bytes(), s_shares[x].to_bytes()
            commit[holder] = [commitment(self.params, self.me, "b", b), commitment(self.params, self.me, "s", s)]
            if holder != self.me:
                boxes[holder] = seal_share(self.params.ctx, self.me, self.c_key, holder, self.peers[holder]["c"], b + s)
        x_me = self.params.index(self.me)
        self.own_shares = (b_shares[x_me], s_shares[x_me])
        return sign(self.params, "share", self.me, {"boxes": boxes, "commit": commit, "u1": g.digest}, self.signer)

    def mask(self, shares: dict[str, dict[str, Any]], vector: np.ndarray) -> np.ndarray:
        """Stage 3, given roster U2 (the share messages of everyone who shared): the masked vector.
        Masks `vector` in place (the hospital's encoded update, of no use afterwards: no second copy of
        a model-sized array). Its signed message (`mask_message`) follows once the transport knows the
        vector's digest."""
        g = self._graph()
        if self.me not in shares:
            raise ProtocolViolation(f"{self.me} is missing from roster U2")
        if not set(shares) <= set(g.members):
            outside = sorted(set(shares) - set(g.members))
            raise ProtocolViolation(f"{self.me}: roster U2 names hospitals outside U1: {outside}")
        if vector.dtype != ring_dtype(self.params.bits) or vector.shape != (self.params.length,):
            raise ProtocolViolation(f"vector must be {self.params.length} elements of Z_2^{self.params.bits}")
        for sender, message in shares.items():
            if sender not in self.peers:
                continue
            payload = verified(self.params, "share", message, self.verify)
            if payload["hospital"] != sender or payload["u1"] != g.digest:
                raise ProtocolViolation(f"{self.me}: {sender} shared under another roster U1: the coordinator is "
                                        f"inconsistent")
            box = payload["boxes"].get(self.me)
            if box is None:  # its shares for me are missing: the others' shares must do
                self.bad[sender] = f"{sender} shared but sent nothing to its neighbour {self.me}"
            else:
                self.shared_with_me[sender] = box
        self.u2 = frozenset(shares)
        self.floors.check_u2(self.params, self.me, self.u2)
        masks = [(self.b_seed, 1)] + [
            (pair_seed(self.params.ctx, self.me, self.s_key, peer, self.peers[peer]["s"]), 1 if self.me < peer else -1)
            for peer in sorted(self.u2 & set(self.peers))]
        apply_masks(vector, masks)
        return vector

    def mask_message(self, digest: str, weight_bound: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The signed claim that this vector (by digest) is mine, masked under this U1 and U2, with the
        bound on its weight."""
        body = {"digest": digest, "length": self.params.length, "weight_bound": int(weight_bound),
                "u1": self._graph().digest, "u2": roster_digest(self.u2), **(extra or {})}
        return sign(self.params, "mask", self.me, body, self.signer)

    def confirm(self, masks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 4, given roster U3 as the signed mask messages of those who sent a masked vector: check
        each was masked under the U1 and U2 this hospital holds, then sign (U1, U2, U3), so a coordinator
        that tells different hospitals different rosters (to unmask one hospital's vector) is caught."""
        g, u3 = self._graph(), frozenset(masks)
        if not u3 <= self.u2 or self.me not in u3:
            raise ProtocolViolation(f"{self.me}: roster U3 {sorted(u3)} is not a subset of U2 containing it")
        # the vectors this hospital helps unmask are its neighbours' (and its own): those must be bound
        check_masks(self.params, g, self.u2, {h: masks[h] for h in u3 & (g.nbrs[self.me] | {self.me})}, self.verify)
        mine = (g.nbrs[self.me] | {self.me}) & u3
        if len(u3) < max(g.threshold, self.floors.min_sum) or len(mine) < g.threshold:
            raise SecAggAbort(f"{self.me}: only {len(mine)} of its neighbourhood and {len(u3)} hospitals in all sent "
                              f"masked vectors (threshold {g.threshold}, smallest sum {self.floors.min_sum})")
        self.u3 = u3
        body = {"u1": g.digest, "u2": sorted(self.u2), "u3": sorted(u3)}
        return sign(self.params, "confirm", self.me, body, self.signer)

    def unmask(self, confirmations: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 5, given the coordinator's relay of confirmations: when a strict majority of the round's
        parties signed the same (U1, U2, U3), reveal b-shares of survivors and s-shares of those who
        shared but sent no vector; never both for one hospital, and for one sum per global model."""
        g = self._graph()
        mine = (g.digest, sorted(self.u2), sorted(self.u3))
        agreeing = set()
        for h, message in confirmations.items():
            payload = verified(self.params, "confirm", message, self.verify)
            if payload["hospital"] != h or h not in self.u3:
                raise ProtocolViolation(f"{self.me}: confirmation of {h} is not from a member of U3")
            if (payload["u1"], payload["u2"], payload["u3"]) != mine:
                raise ProtocolViolation(f"{self.me}: {h} was given other rosters: the coordinator is inconsistent")
            agreeing.add(h)
        need = self.floors.confirm_quorum(len(self.params.parties))
        if self.me not in agreeing or len(agreeing) < need:
            raise SecAggAbort(f"{self.me}: only {len(agreeing)} of the {len(self.params.parties)} parties confirmed "
                              f"this roster, {need} (a strict majority) must before anything is revealed")
        if self.own_shares is None:
            raise ProtocolViolation(f"{self.me}: unmask before share")
        for key in self.ledger_keys():
            self.ledger.claim(key, sorted(self.u3), self.params.session)
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

    def ledger_keys(self) -> list[str]:
        """What this sum is of, as the ledger remembers it: one sum of updates per model (whatever round or
        purpose the coordinator calls it, and however it re-encrypts or re-commits the same weights), one
        of a model's validation figures, one statistics pass per federation."""
        p = self.params
        if p.purpose == "statistics":
            return [f"{p.federation}/statistics"]
        if not self.weights_digest:
            raise ProtocolViolation(f"{self.me}: nothing is revealed before the hospital has checked the model")
        keys = [f"{p.federation}/update/{self.weights_digest}"] if p.purpose.startswith("train") else []
        return keys + ([f"{p.federation}/validation/{self.weights_digest}"] if "validate" in p.purpose else [])

    def _graph(self) -> Graph:
        if self.graph is None:
            raise ProtocolViolation(f"{self.me}: a stage before share")
        return self.graph


def _hex(share: shamir.Share) -> str:
    return share.to_bytes().hex()
