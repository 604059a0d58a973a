"""The protocol's messages through the object store, and the two drivers that exchange them.

Everything lives under `<round>/secagg/<session>/` in the federation's encrypted store: hospitals
post signed stage messages and their masked vectors; the coordinator posts a roster after each stage
(or `abort`). Each side polls with a deadline, so nobody waits forever. The same drivers run in
embedded mode (hospitals as threads) and distributed mode (hospitals on their own agents).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from primia.errors import PrimiaError
from primia.messages import CheckpointRef
from primia.secure import protocol as p
from primia.store.checkpoints import CheckpointStore

Gone = Callable[[], set[str]]  # hospitals known to have stopped (their run ended): no use waiting


class Channel:
    def __init__(self, store: CheckpointStore, params: p.Params, poll_s: float = 0.1) -> None:
        self.store, self.params, self.poll_s = store, params, poll_s
        self.round, self.base = params.round, f"secagg/{params.session}"

    def post(self, stage: str, hospital: str, message: dict[str, Any]) -> None:
        self.store.put_json(self.round, f"{self.base}/{stage}/{hospital}.json", message)

    def post_vector(self, hospital: str, vector: np.ndarray) -> str:
        """Store a masked vector; its sha256 (of the sealed object) goes into the signed mask message."""
        return self.store.put_object(self.round, self._vector(hospital), vector.tobytes()).sha256

    def read_vector(self, hospital: str, sha256: str) -> np.ndarray:
        """The masked vector, checked against the digest its sender signed."""
        ref = CheckpointRef(self.store.store.bucket, self.store.key_for(self.round, self._vector(hospital)), sha256,
                            self.round)
        try:
            return p.decode_vector(self.store.get_object(ref), self.params)
        except PrimiaError as exc:
            raise p.ProtocolViolation(f"{hospital}: masked vector missing or not the one it signed ({exc})") from None

    def _vector(self, hospital: str) -> str:
        return f"{self.base}/vectors/{hospital}.bin"

    def posted(self, stage: str) -> set[str]:
        return {name.removesuffix(".json") for name in self.store.names(self.round, f"{self.base}/{stage}/")}

    def read(self, stage: str, hospital: str) -> dict[str, Any] | None:
        return self.store.find_json(self.round, f"{self.base}/{stage}/{hospital}.json")

    def publish(self, stage: str, roster: dict[str, Any]) -> None:
        self.store.put_json(self.round, f"{self.base}/rosters/{stage}.json", roster)

    def abort(self, reason: str) -> None:
        self.store.put_json(self.round, f"{self.base}/rosters/abort.json", {"reason": reason})

    def await_roster(self, stage: str, deadline: float) -> dict[str, Any]:
        """The coordinator's roster after `stage`; raises on its abort or when the deadline passes.
        One listing request per poll (rosters and the abort notice share a folder): a cheap wait."""
        while True:
            present = self.store.names(self.round, f"{self.base}/rosters/")
            if "abort.json" in present:
                aborted = self.store.find_json(self.round, f"{self.base}/rosters/abort.json")
                raise p.SecAggAbort(str((aborted or {}).get("reason", "aborted by the coordinator")))
            if f"{stage}.json" in present:
                roster = self.store.find_json(self.round, f"{self.base}/rosters/{stage}.json")
                if roster is not None:
                    return roster
            if time.monotonic() > deadline:
                raise p.SecAggAbort(f"no roster after stage {stage} from the coordinator in time")
            time.sleep(self.poll_s)

    def collect(self, stage: str, expected: set[str], deadline: float, gone: Gone) -> dict[str, dict[str, Any]]:
        """Stage messages from `expected` until all are in, the rest have stopped, or the deadline."""
        got: dict[str, dict[str, Any]] = {}
        while True:
            for hospital in sorted((self.posted(stage) & expected) - set(got)):
                message = self.read(stage, hospital)
                if message is not None:
                    got[hospital] = message
            missing = expected - set(got)
            if not missing or not (missing - gone()) or time.monotonic() > deadline:
                return got
            time.sleep(self.poll_s)


# ------------------------------------------------------------------ hospital
@dataclass
class HospitalSide:
    """A hospital's run of the protocol around its local training: `prepare` before training
    (advertise, share), `submit` after it (mask, then unmask for the others)."""

    channel: Channel
    client: p.Client
    wait_s: float
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)

    def prepare(self) -> None:
        c, me = self.channel, self.client.me
        c.post("advertise", me, self.client.advertise())
        adverts = c.await_roster("advertise", self._deadline())
        c.post("share", me, self.client.share(adverts["adverts"]))
        self.shares = c.await_roster("share", self._deadline())["shares"]

    def submit(self, vector: np.ndarray) -> None:
        """Mask `vector` (in place), send it, confirm the survivors, then help unmask the others."""
        c, me = self.channel, self.client.me
        masked = self.client.mask(self.shares, vector)
        digest = c.post_vector(me, masked)  # the vector first: a mask message always has its vector
        c.post("mask", me, self.client.mask_message(digest))
        survivors = c.await_roster("mask", self._deadline())["masked"]
        c.post("confirm", me, self.client.confirm(survivors))
        confirmations = c.await_roster("confirm", self._deadline())["confirmations"]
        c.post("unmask", me, self.client.unmask(confirmations))

    def _deadline(self) -> float:
        return time.monotonic() + self.wait_s


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

    def missing(self, expected: set[str], got: set[str] | dict[str, Any], stage: str) -> None:
        for h in sorted(expected - set(got)):
            self.reasons.setdefault(h, f"secure aggregation: no {stage} message in time")

    def rejected(self, reasons: dict[str, str]) -> None:
        for h, why in reasons.items():
            self.reasons.setdefault(h, f"secure aggregation: {why}")


def serve(channel: Channel, verify: p.Verifier, deadlines: Deadlines, gone: Gone,
          log: ServerLog | None = None, quorum: int = 0) -> p.Unmasked:
    """Drive the four stages for the coordinator; publishes `abort` (and raises SecAggAbort) when the
    survivors fall below the threshold - or below the round's quorum, which can then no longer be
    met - so hospitals stop waiting and nothing partial is used."""
    log = log or ServerLog()
    try:
        return _serve(channel, verify, deadlines, gone, log, quorum)
    except p.SecAggAbort as exc:
        channel.abort(str(exc))
        raise
    except Exception as exc:  # the coordinator failed: hospitals must not wait for a roster that never comes
        channel.abort(f"the coordinator stopped: {type(exc).__name__}")
        raise


def _serve(c: Channel, verify: p.Verifier, deadlines: Deadlines, gone: Gone, log: ServerLog,
           quorum: int) -> p.Unmasked:
    params, everyone = c.params, set(c.params.parties)

    def stage(name: str, expected: set[str], deadline: float) -> dict[str, dict[str, Any]]:
        raw = c.collect(name, expected, deadline, gone)
        log.missing(expected, raw, name)
        good, bad = p.accept(params, name, raw, verify, frozenset(expected))
        log.rejected(bad)
        p.require(params, name, set(good))
        if name in ("advertise", "share", "mask") and len(good) < quorum:  # later dropouts still count
            why = "; ".join(f"{h}: {r}" for h, r in sorted(log.reasons.items()))
            raise p.SecAggAbort(f"round {params.round}: {len(good)} of {len(everyone)} hospitals remain in secure "
                                f"aggregation after stage {name}, quorum is {quorum} (policy.min_hospitals) [{why}]")
        return good

    adverts = stage("advertise", everyone, deadlines.stage())
    c.publish("advertise", {"adverts": adverts})
    shares = stage("share", set(adverts), deadlines.stage())
    c.publish("share", {"shares": shares})
    masks = stage("mask", set(shares), deadlines.mask_at)
    vectors = {}
    for h, message in masks.items():
        try:
            vectors[h] = c.read_vector(h, str(message["payload"]["sha256"]))
        except p.ProtocolViolation as exc:
            vectors.pop(h, None)
            log.rejected({h: str(exc)})
    p.require(params, "mask", set(vectors))
    c.publish("mask", {"masked": sorted(vectors)})
    confirms = stage("confirm", set(vectors), time.monotonic() + deadlines.stage_s)
    c.publish("confirm", {"confirmations": confirms})
    reveals = stage("unmask", set(confirms), time.monotonic() + deadlines.stage_s)
    for h, r in reveals.items():
        for sender, why in r["payload"].get("bad", {}).items():
            log.reasons.setdefault(sender, f"secure aggregation: {h} reports {why}")
    return p.unmask_sum(params, adverts, frozenset(shares), vectors, reveals)
