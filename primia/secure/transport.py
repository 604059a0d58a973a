"""The protocol's messages through the object store, and the two drivers that exchange them.

Every party writes only its own objects: a hospital posts its signed stage messages and its masked
vector in its own mailbox (its own bucket in distributed mode), under `<round>/secagg/<session>/`;
the coordinator posts a roster after each stage (or `abort`) in its own store, signed with its key,
and hospitals check that signature against the federation's signed roster. Each side waits with a
deadline, so nobody waits forever. The same drivers run in embedded mode (hospitals as threads) and
distributed mode (hospitals on their own agents). A wait wakes as soon as any party in this process posts
(embedded mode: every party), or when another process announces a post (distributed mode: `announce_with`
and `woken`, wired to Prefect events in `tasks/secagg_events.py`), and otherwise re-reads the store every
`poll_s`. An announcement only wakes a wait: what counts is still only what is read from the store and
verified, so a forged or lost announcement costs one listing or one poll interval, nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from primia.errors import PrimiaError
from primia.messages import CheckpointRef
from primia.secure import protocol as p
from primia.secure import unmask as u
from primia.secure.agreement import b64, unb64
from primia.signing import canonical_json
from primia.store.checkpoints import CheckpointStore

Gone = Callable[[], set[str]]  # hospitals known to have stopped (run ended, or silent too long): no use waiting
Mailbox = Callable[[str], CheckpointStore]  # hospital -> the store it writes its messages to
CoordinatorCheck = Callable[[bytes, bytes], bool]  # (message, signature) -> signed by the roster's coordinator
log = logging.getLogger("primia.secagg")


class _Posts:
    """A count of the messages posted in this process, to wake waiters at once instead of at their next
    poll. A post between a waiter's read of the store and its wait is not lost: it waits only while the
    count it saw before reading is unchanged."""

    def __init__(self) -> None:
        self._cond, self.count = threading.Condition(), 0

    def bump(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_after(self, seen: int, timeout_s: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.count != seen, timeout_s)


Announce = Callable[[str, str, str], None]  # (kind: "message" | "roster", federation, session) -> tell the others
_announcers: list[Announce] = []


def announce_with(announce: Announce | None) -> None:
    """Tell other processes about this process's posts through `announce` (None: stop telling)."""
    _announcers[:] = [] if announce is None else [announce]


def woken(kind: str) -> None:
    """Another process announced a post of `kind`: wake the waits for that kind to read the store now."""
    {"message": _MESSAGES, "roster": _ROSTERS}[kind].bump()


def _tell(kind: str, params: p.Params) -> None:
    for announce in _announcers:
        try:
            announce(kind, params.federation, params.session)
        except Exception as exc:  # noqa: BLE001  # the others still poll: an announcement may be lost, a round not
            log.debug("announcing a secure-aggregation %s failed: %s", kind, type(exc).__name__)


_MESSAGES, _ROSTERS = _Posts(), _Posts()  # the parties' stage messages (the coordinator waits on them) and the
# coordinator's rosters (the parties wait on those): apart, so a post wakes only who waits for its kind - one
# counter for both woke 20 embedded hospitals on each of their 20 peers' posts, each to list the store again


class Channel:
    def __init__(self, rosters: CheckpointStore, mailbox: Mailbox, params: p.Params, poll_s: float = 0.1) -> None:
        self.rosters, self.mailbox, self.params, self.poll_s = rosters, mailbox, params, poll_s
        self.round, self.base = params.round, f"secagg/{params.session}"

    # ------------------------------------------------------------- hospitals' messages
    def post(self, stage: str, hospital: str, message: dict[str, Any]) -> None:
        self.mailbox(hospital).put_json(self.round, f"{self.base}/{stage}/{hospital}.json", message)
        _MESSAGES.bump()
        _tell("message", self.params)

    def post_vector(self, hospital: str, vector: np.ndarray) -> str:
        """Store a masked vector; its digest (of the sealed object) goes into the signed mask message."""
        return self.mailbox(hospital).put_object(self.round, self._vector(hospital), vector.tobytes()).digest

    def read_vector(self, hospital: str, digest: str) -> np.ndarray:
        """The masked vector, checked against the digest its sender signed."""
        box = self.mailbox(hospital)
        ref = CheckpointRef(box.store.bucket, box.key_for(self.round, self._vector(hospital)), digest, self.round)
        try:
            return u.decode_vector(box.get_object(ref), self.params)
        except PrimiaError as exc:
            raise p.ProtocolViolation(f"{hospital}: masked vector missing or not the one it signed ({exc})") from None

    def _vector(self, hospital: str) -> str:
        return f"{self.base}/vectors/{hospital}.bin"

    def posted(self, stage: str, hospitals: set[str]) -> set[str]:
        """Which of `hospitals` posted `stage`: one listing per distinct mailbox."""
        by_box: dict[int, tuple[CheckpointStore, set[str]]] = {}
        for h in hospitals:
            box = self.mailbox(h)
            by_box.setdefault(id(box), (box, set()))[1].add(h)
        found: set[str] = set()
        for box, names in by_box.values():
            found |= {n.removesuffix(".json") for n in box.names(self.round, f"{self.base}/{stage}/")} & names
        return found

    def read(self, stage: str, hospital: str) -> dict[str, Any] | None:
        return self.mailbox(hospital).find_json(self.round, f"{self.base}/{stage}/{hospital}.json")

    def collect(self, stage: str, expected: set[str], deadline: float, gone: Gone) -> dict[str, dict[str, Any]]:
        """Stage messages from `expected` until all are in, the rest have stopped, or the deadline."""
        got: dict[str, dict[str, Any]] = {}
        while True:
            seen = _MESSAGES.count
            # who has stopped, taken before the listing: a party that posted and then ended is read below,
            # not mistaken for one that stopped without posting (20 embedded hospitals lost theirs so)
            stopped = gone()
            for hospital in sorted(self.posted(stage, expected - set(got))):
                message = self.read(stage, hospital)
                if message is not None:
                    got[hospital] = message
            missing = expected - set(got)
            if not missing or not (missing - stopped) or time.monotonic() > deadline:
                return got
            _MESSAGES.wait_after(seen, self.poll_s)

    # ------------------------------------------------------------- the coordinator's rosters
    def _roster_payload(self, stage: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"roster": stage, "federation": self.params.federation, "round": self.round,
                "session": self.params.session, **body}

    def publish(self, stage: str, body: dict[str, Any], signer: p.Signer) -> None:
        payload = self._roster_payload(stage, body)
        self.rosters.put_json(self.round, f"{self.base}/rosters/{stage}.json",
                              {"payload": payload, "signature": b64(signer(canonical_json(payload)))})
        _ROSTERS.bump()
        _tell("roster", self.params)

    def abort(self, reason: str, signer: p.Signer) -> None:
        self.publish("abort", {"reason": reason}, signer)

    def _opened(self, stage: str, check: CoordinatorCheck) -> dict[str, Any] | None:
        """A roster the coordinator signed for this round and session (None if absent); anything else is
        refused."""
        doc = self.rosters.find_json(self.round, f"{self.base}/rosters/{stage}.json")
        if doc is None:
            return None
        try:
            payload, signature = doc["payload"], unb64(doc["signature"])
            valid = check(canonical_json(payload), signature)
            got = (payload.get("roster"), payload.get("federation"), payload.get("round"), payload.get("session"))
        except (KeyError, TypeError, ValueError, AttributeError):
            valid, got = False, None
        if not valid or got != (stage, self.params.federation, self.round, self.params.session):
            raise p.ProtocolViolation(f"roster {stage} of round {self.round} is not signed by the federation's "
                                      f"coordinator key for this round and session: refused")
        return dict(payload)

    def await_roster(self, stage: str, deadline: float, check: CoordinatorCheck) -> dict[str, Any]:
        """The coordinator's signed roster after `stage`; raises on its signed abort or at the deadline.
        One listing request per poll (rosters and the abort notice share a folder): a cheap wait."""
        while True:
            seen = _ROSTERS.count
            present = self.rosters.names(self.round, f"{self.base}/rosters/")
            if "abort.json" in present:
                try:
                    aborted = self._opened("abort", check)
                except p.ProtocolViolation:  # not the coordinator's: an abort nobody may send is ignored
                    aborted = None
                if aborted is not None:
                    raise p.SecAggAbort(str(aborted.get("reason", "aborted by the coordinator")))
            if f"{stage}.json" in present:
                roster = self._opened(stage, check)
                if roster is not None:
                    return roster
            if time.monotonic() > deadline:
                raise p.SecAggAbort(f"no roster after stage {stage} from the coordinator in time")
            _ROSTERS.wait_after(seen, self.poll_s)


# ------------------------------------------------------------------ hospital
@dataclass
class HospitalSide:
    """A hospital's run of the protocol around its local training: `prepare` before training
    (advertise, share), `submit` after it (mask, then unmask for the others)."""

    channel: Channel
    client: p.Client
    wait_s: float
    coordinator: CoordinatorCheck
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)

    def prepare(self) -> None:
        c, me = self.channel, self.client.me
        c.post("advertise", me, self.client.advertise())
        adverts = self._roster("advertise")
        c.post("share", me, self.client.share(adverts["adverts"]))
        self.shares = self._roster("share")["shares"]

    def bind_model(self, weights_digest: str) -> None:
        """The digest of the global model this hospital loaded (decrypted): its ledger's key."""
        self.client.weights_digest = weights_digest

    def submit(self, vector: np.ndarray, weight_bound: int, extra: dict[str, Any] | None = None) -> None:
        """Mask `vector` (in place), send it, confirm the survivors, then help unmask the others."""
        c, me = self.channel, self.client.me
        masked = self.client.mask(self.shares, vector)
        digest = c.post_vector(me, masked)  # the vector first: a mask message always has its vector
        c.post("mask", me, self.client.mask_message(digest, weight_bound, extra))
        survivors = self._roster("mask")["masked"]
        c.post("confirm", me, self.client.confirm(survivors))  # the signed mask messages of U3
        confirmations = self._roster("confirm")["confirmations"]
        c.post("unmask", me, self.client.unmask(confirmations))

    def _roster(self, stage: str) -> dict[str, Any]:
        return self.channel.await_roster(stage, time.monotonic() + self.wait_s, self.coordinator)


# ------------------------------------------------------------------ coordinator
@dataclass(frozen=True)
class Deadlines:
    """Stage waits: advertise and share within stage_s (and the round), masked vectors by the round's
    end (training happens in between), unmask within stage_s after that."""

    stage_s: float
    mask_at: float  # monotonic time: the round's timeout

    def stage(self) -> float:
        return min(time.monotonic() + self.stage_s, self.mask_at)


@dataclass
class ServerLog:
    """Why each hospital left the protocol, for the round's artifact."""

    reasons: dict[str, str] = field(default_factory=dict)

    def missing(self, expected: set[str], got: set[str] | dict[str, Any], stage: str, gone: set[str]) -> None:
        for h in sorted(expected - set(got)):
            why = "stopped (its run ended or it fell silent)" if h in gone else "no message in time"
            self.reasons.setdefault(h, f"secure aggregation: {why} at stage {stage}")

    def rejected(self, reasons: dict[str, str]) -> None:
        for h, why in reasons.items():
            self.reasons.setdefault(h, f"secure aggregation: {why}")


Admit = Callable[[dict[str, dict[str, Any]]], dict[str, str]]  # signed mask messages -> reasons to refuse some


@dataclass
class Coordinator:
    """The coordinator's side: drives the stages, signs its rosters, never holds an update."""

    channel: Channel
    verify: p.Verifier
    signer: p.Signer
    deadlines: Deadlines
    gone: Gone
    log: ServerLog = field(default_factory=ServerLog)
    quorum: int = 0
    admit: Admit | None = None  # which senders of masked vectors may be in the sum (the round's accept check)
    max_weight: int = 0  # the largest weight bound a hospital may sign (secure_aggregation.max_examples; 0: any)

    def serve(self) -> u.Unmasked:
        """Publishes a signed `abort` (and raises SecAggAbort) when the survivors fall below what the
        protocol needs - or below the round's quorum, which can then no longer be met - so hospitals
        stop waiting and nothing partial is used."""
        try:
            return self._serve()
        except p.SecAggAbort as exc:
            self.channel.abort(str(exc), self.signer)
            raise
        except Exception as exc:  # the coordinator failed: hospitals must not wait for a roster that never comes
            self.channel.abort(f"the coordinator stopped: {type(exc).__name__}", self.signer)
            raise

    def _stage(self, name: str, expected: set[str], deadline: float, need: int) -> dict[str, dict[str, Any]]:
        c, params = self.channel, self.channel.params
        raw = c.collect(name, expected, deadline, self.gone)
        self.log.missing(expected, raw, name, self.gone())
        good, bad = u.accept(params, name, raw, self.verify, frozenset(expected))
        self.log.rejected(bad)
        try:
            u.require(params, name, set(good), need)
        except p.SecAggAbort as exc:
            why = "; ".join(f"{h}: {r}" for h, r in sorted(self.log.reasons.items()))
            raise p.SecAggAbort(f"{exc} [{why}]" if why else str(exc)) from None
        if name in ("advertise", "share", "mask") and len(good) < self.quorum:  # later dropouts still count
            why = "; ".join(f"{h}: {r}" for h, r in sorted(self.log.reasons.items()))
            raise p.SecAggAbort(f"round {params.round}: {len(good)} of {len(params.parties)} hospitals remain in "
                                f"secure aggregation after stage {name}, quorum is {self.quorum} "
                                f"(policy.min_hospitals) [{why}]")
        return good

    def _serve(self) -> u.Unmasked:
        c, params, d = self.channel, self.channel.params, self.deadlines
        everyone, majority = set(params.parties), p.Floors().confirm_quorum(len(params.parties))
        adverts = self._stage("advertise", everyone, d.stage(), 2)
        g = params.graph({h: m["payload"] for h, m in adverts.items()})
        c.publish("advertise", {"adverts": adverts}, self.signer)
        shares = self._stage("share", set(adverts), d.stage(), g.threshold)
        shares, other_view = u.consistent_shares(g, shares)
        self.log.rejected(other_view)
        c.publish("share", {"shares": shares}, self.signer)
        masks = self._stage("mask", set(shares), d.mask_at, g.threshold)
        refused = {h: f"{h}: signed a weight bound above secure_aggregation.max_examples ({self.max_weight})"
                   for h, m in masks.items() if self.max_weight and m["payload"]["weight_bound"] > self.max_weight}
        if self.admit is not None:  # a hospital whose answer is rejected is left out of the sum
            refused |= self.admit({h: m for h, m in masks.items() if h not in refused})
        self.log.rejected(refused)
        masks = {h: m for h, m in masks.items() if h not in refused}
        vectors = {}
        for h, message in masks.items():
            try:
                vectors[h] = c.read_vector(h, str(message["payload"]["digest"]))
            except p.ProtocolViolation as exc:
                self.log.rejected({h: str(exc)})
        u.require(params, "mask", set(vectors), max(g.threshold, majority))
        c.publish("mask", {"masked": {h: masks[h] for h in sorted(vectors)}}, self.signer)
        confirms = self._stage("confirm", set(vectors), time.monotonic() + d.stage_s, majority)
        view = {"u1": g.digest, "u2": sorted(shares), "u3": sorted(vectors)}
        other = {h: f"{h} confirmed rosters the coordinator did not publish" for h, m in confirms.items()
                 if {k: m["payload"][k] for k in view} != view}  # relayed, it would stop every honest hospital
        self.log.rejected(other)
        confirms = {h: m for h, m in confirms.items() if h not in other}
        u.require(params, "confirm", set(confirms), majority)
        c.publish("confirm", {"confirmations": confirms}, self.signer)
        reveals = self._stage("unmask", set(confirms), time.monotonic() + d.stage_s, g.threshold)
        for h, r in reveals.items():
            for sender, why in r["payload"].get("bad", {}).items():
                self.log.reasons.setdefault(sender, f"secure aggregation: {h} reports {why}")
        out = u.unmask_sum(params, adverts, shares, vectors, reveals, {h: masks[h] for h in vectors})
        self.log.rejected(out.bad_shares)
        return out
