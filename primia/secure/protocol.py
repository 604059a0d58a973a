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
automatic ones. The coordinator only ever holds masked vectors, their sum and the seeds the protocol
reveals.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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
PURPOSES = ("train", "train+validate", "validate", "statistics")


class SecAggAbort(RuntimeError):  # noqa: N818  # an outcome of the protocol, not a programming error
    """The round cannot be unmasked safely (too few hospitals or shares); nothing partial is used."""


class ProtocolViolation(ValueError):  # noqa: N818
    """A message, roster or plan breaks the protocol (bad signature, wrong round, inconsistent roster)."""


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
    model: str = ""  # sha256 of the global model the round starts from ("" for the statistics pass)
    purpose: str = "train+validate"  # what the sum is of: train, train+validate, validate or statistics

    def __post_init__(self) -> None:
        ring_dtype(self.bits)
        if self.purpose not in PURPOSES:
            raise ProtocolViolation(f"purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")
        if self.degree and self.degree < len(self.parties) - 1 and (self.degree < 2 or self.degree % 2):
            raise ProtocolViolation(f"SecAgg+ degree must be 0, even and >= 2, or >= parties-1, got {self.degree}")
        if not 0 < self.threshold_fraction < 1:
            raise ProtocolViolation(f"threshold_fraction must be in (0, 1), got {self.threshold_fraction}")
        if len(self.parties) < 2:
            raise ProtocolViolation(f"secure aggregation needs at least 2 hospitals, got {list(self.parties)}")
        if tuple(sorted(set(self.parties))) != self.parties:
            raise ProtocolViolation("parties must be sorted and distinct")

    @property
    def ctx(self) -> Context:
        return Context(f"{self.federation}/{self.session}", self.round)

    @property
    def k(self) -> int:
        """The graph degree if every party advertises."""
        return self.degree_for(len(self.parties))

    @property
    def threshold(self) -> int:
        """Shares needed per neighbourhood if every party advertises."""
        return graph.threshold(self.k + 1, self.threshold_fraction)

    def degree_for(self, members: int) -> int:
        return min(self.degree, members - 1) if self.degree else graph.auto_degree(members)

    def graph(self, adverts: Mapping[str, Mapping[str, Any]]) -> Graph:
        """The SecAgg+ graph over the hospitals of U1, seeded by the hash of their signed adverts: every
        party recomputes it, and no single party (the coordinator least) chooses it."""
        members = tuple(sorted(adverts))
        body = {"federation": self.federation, "round": self.round, "session": self.session,
                "adverts": {h: [adverts[h]["c_pk"], adverts[h]["s_pk"]] for h in members}}
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        k = self.degree_for(len(members))
        nbrs = graph.neighbours(list(members), k, int(digest[:16], 16)) if len(members) > 1 else \
            {m: frozenset() for m in members}
        return Graph(members, k, graph.threshold(k + 1, self.threshold_fraction), digest, nbrs)

    def index(self, party: str) -> int:
        return self.parties.index(party) + 1  # Shamir x-coordinate: never 0

    def to_dict(self) -> dict[str, Any]:
        return {"federation": self.federation, "round": self.round, "session": self.session,
                "parties": list(self.parties), "length": self.length, "bits": self.bits, "degree": self.degree,
                "threshold_fraction": self.threshold_fraction, "model": self.model, "purpose": self.purpose}

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


@dataclass(frozen=True)
class Graph:
    """Who masks with whom in this run, fixed by U1."""

    members: tuple[str, ...]  # U1
    k: int
    threshold: int
    digest: str  # hash of U1's adverts: seeds the graph and binds every later message to this U1
    nbrs: dict[str, frozenset[str]]


@dataclass(frozen=True)
class Floors:
    """A hospital's own limits on what it takes part in, whatever the coordinator plans.

    `colluders`: how many other hospitals it assumes may collude with a malicious coordinator. Two
    different rosters can both gather `confirm_quorum` confirmations only if more than `colluders`
    parties confirmed both, which no honest hospital does; a sum needs more than `colluders` + 1
    parties, or the colluders would learn the remaining hospital's update from it."""

    members: frozenset[str] | None = None  # who may be a party: the signed roster's active hospitals
    min_parties: int = 3
    max_parties: int = 10_000  # the ring's overflow bound holds for at most this many
    min_threshold_fraction: float = 0.5
    colluders: int = 0

    def check_plan(self, params: Params, me: str) -> None:
        n = len(params.parties)
        if me not in params.parties:
            raise ProtocolViolation(f"{me} is not a party of round {params.round}")
        if n < self.min_parties:
            raise ProtocolViolation(f"{me}: the plan has {n} parties, fewer than this hospital's floor of "
                                    f"{self.min_parties}: refused")
        if n > self.max_parties:
            raise ProtocolViolation(f"{me}: the plan has {n} parties, more than the {self.max_parties} the ring's "
                                    f"overflow bound holds (secure_aggregation.max_hospitals): refused")
        strangers = sorted(set(params.parties) - self.members) if self.members is not None else []
        if strangers:
            raise ProtocolViolation(f"{me}: {', '.join(strangers)} in the plan are not active hospitals of the signed "
                                    f"roster: refused")
        if params.threshold_fraction < self.min_threshold_fraction:
            raise ProtocolViolation(f"{me}: threshold fraction {params.threshold_fraction} is below this hospital's "
                                    f"floor of {self.min_threshold_fraction}: refused")
        if params.degree and params.degree < graph.auto_degree(n):
            raise ProtocolViolation(f"{me}: SecAgg+ degree {params.degree} is below the automatic "
                                    f"{graph.auto_degree(n)} for {n} parties: refused")

    def check_u2(self, params: Params, me: str, u2: frozenset[str]) -> None:
        """Mask only when a strict majority of the parties shared: a coordinator that tells this hospital
        fewer did (so that it masks with partners whose keys the others will reveal) is refused."""
        need = self.confirm_quorum(len(params.parties))
        if len(u2) < need:
            raise SecAggAbort(f"{me}: roster U2 names {len(u2)} of {len(params.parties)} parties, {need} (a strict "
                              f"majority) must have shared before this hospital masks its update")

    def confirm_quorum(self, parties: int) -> int:
        """Confirmations of one (U1, U2, U3) a hospital needs before revealing anything."""
        return min(parties, (parties + self.colluders) // 2 + 1)

    @property
    def min_sum(self) -> int:
        return self.colluders + 2


class Ledger(Protocol):
    """Where a hospital remembers which sum it helped unmask (see primia.secure.ledger)."""

    def claim(self, key: str, members: list[str], session: str) -> None: ...


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
    "advertise": {"c_pk": str, "s_pk": str}, "share": {"boxes": dict, "commit": dict, "u1": str},
    "mask": {"sha256": str, "weight_bound": int, "u1": str, "u2": str}, "confirm": {"u1": str, "u2": list, "u3": list},
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

    def __post_init__(self) -> None:
        self.floors.check_plan(self.params, self.me)

    def advertise(self) -> dict[str, Any]:
        body = {"c_pk": b64(raw_public(self.c_key)), "s_pk": b64(raw_public(self.s_key))}
        return sign(self.params, "advertise", self.me, body, self.signer)

    def share(self, adverts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage 2, given roster U1 (the coordinator's list of signed adverts; each re-verified here)."""
        if self.me not in adverts:
            raise ProtocolViolation(f"{self.me} is missing from roster U1")
        own = verified(self.params, "advertise", adverts[self.me], self.verify)
        if (own["c_pk"], own["s_pk"]) != (b64(raw_public(self.c_key)), b64(raw_public(self.s_key))):
            raise ProtocolViolation(f"{self.me}: roster U1 carries another advert in its name")
        payloads = {h: _advert_payload(h, m) for h, m in adverts.items()}
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

    def mask_message(self, sha256: str, weight_bound: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The signed claim that this vector (by digest) is mine, masked under this U1 and U2, with the
        bound on its weight."""
        body = {"sha256": sha256, "length": self.params.length, "weight_bound": int(weight_bound),
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
        p, members = self.params, sorted(self.u3)
        self.ledger.claim(f"{p.federation}/round-{p.round}/{p.model or 'statistics'}/{p.purpose}", members, p.session)
        if "validate" in p.purpose:  # a model's validation figures go into one sum only, whichever pass asks
            self.ledger.claim(f"{p.federation}/validation/{p.model}", members, p.session)
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

    def _graph(self) -> Graph:
        if self.graph is None:
            raise ProtocolViolation(f"{self.me}: a stage before share")
        return self.graph


def _hex(share: shamir.Share) -> str:
    return share.to_bytes().hex()


# ------------------------------------------------------------------ coordinator side
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
        except (ValueError, shamir.ShamirError):
            bad[revealer] = f"{revealer} revealed a malformed share of {owner}'s secret"
            continue
        committed = commits.get(owner, {}).get(revealer)
        matches = committed is not None and committed[slot] == commitment(params, owner, kind, raw)
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


def decode_vector(data: bytes, params: Params) -> np.ndarray:
    dtype = np.dtype(ring_dtype(params.bits))
    if len(data) != params.length * dtype.itemsize:
        raise ProtocolViolation(f"masked vector has {len(data)} bytes, expected {params.length * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype)
