"""Ask the round's hospitals: the one path embedded and distributed rounds share.

The coordinator sends each sampled hospital references only (a `Dispatch`: round, the committed
global model, a fresh nonce and, under secure aggregation, the protocol's plan), runs its side of
secure aggregation while they work, then reads and verifies each hospital's signed answer against the
signed roster. How a dispatch reaches a hospital is the only thing the two modes do differently
(`Hospitals`: concurrent tasks on one machine, or each hospital's own agent through Prefect).

Under secure aggregation the sum is exactly the accepted hospitals: a hospital's signed mask message
(with its dispatch's nonce) is its answer and is checked against the roster before its vector enters
the sum; a hospital revoked while the protocol runs, or one in the sum whose final answer is
rejected, voids the attempt - nothing of it is committed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from primia.audit.figures import check_membership_report
from primia.config import FederationConfig
from primia.data.statistics import STATS_KEY, mean_std, pooled_moments, stats_start
from primia.federation.policy import ACCEPTED, DROPPED, REJECTED, Outcome, accepted_results
from primia.federation.secure_round import (
    Expected,
    SecureOutcome,
    SecureRound,
    coordinate,
    layout_for,
    plan,
    purpose,
)
from primia.federation.signed import RegistryEntry, signed_from_dict, verify_result
from primia.messages import CheckpointRef, HospitalResult
from primia.secure.protocol import SecAggAbort
from primia.secure.transport import Deadlines
from primia.store.checkpoints import CheckpointStore


def result_name(hospital: str, nonce: str) -> str:
    """Object name of a hospital's signed answer to one dispatch (inside the round's prefix, in its mailbox)."""
    return f"results/{hospital}-{nonce[:16]}.json"


@dataclass(frozen=True)
class Dispatch:
    """What the coordinator sends one hospital: references, never weights or keys."""

    server_round: int
    global_ref: CheckpointRef | None  # None for the statistics pass
    train: bool
    stats: bool
    nonce: str
    secagg: dict[str, Any] | None
    validate: bool = True  # score the incoming model (not when the coordinator has its figures already)
    audit: bool = False  # the privacy audit's membership attack on the hospital's own samples, figures only

    @property
    def purpose(self) -> str:
        return "membership-audit" if self.audit else purpose(self.train, self.stats, self.validate)

    def expected(self, federation: str) -> Expected:
        """What the secure-aggregation plan of this dispatch must say."""
        model = self.global_ref.digest if self.global_ref is not None and not self.stats else ""
        return Expected(federation, self.server_round, model, self.purpose)


class Hospitals(Protocol):
    """How dispatches reach the round's hospitals and how the coordinator learns they stopped."""

    def start(self, dispatches: dict[str, Dispatch]) -> dict[str, str]:
        """Start every dispatch; returns why, for those that could not be started."""
        ...

    def gone(self) -> set[str]:
        """Hospitals known to have stopped: their run ended, or they fell silent too long."""
        ...

    def finish(self, deadline: float) -> dict[str, str]:
        """Wait for the started runs until the deadline (cancelling late ones); per hospital "" when its
        run completed, else why not."""
        ...


@dataclass(frozen=True)
class Pooled:
    """The round's figures over its accepted hospitals: what the coordinator may know."""

    num_examples: int = 0
    train_loss: float = float("nan")
    confusion: np.ndarray | None = None
    clipped: int = 0


@dataclass(frozen=True)
class RoundAnswers:
    """What one attempt of a round produced: an outcome per asked hospital, the pooled figures and,
    under secure aggregation, the unmasked mean (or why the attempt was aborted)."""

    outcomes: list[Outcome]
    secure: SecureOutcome | None = None
    aborted: str = ""
    pooled: Pooled = field(default_factory=Pooled)


@dataclass(frozen=True)
class Asking:
    """The coordinator's means for a round, the same in both modes."""

    store: CheckpointStore  # the coordinator's own
    mailbox: Callable[[str], CheckpointStore]  # where each hospital writes its messages and answers
    registry: Callable[[], Mapping[str, RegistryEntry]]  # the signed roster's hospitals, read afresh each call
    signer: Callable[[bytes], bytes]  # the coordinator's key: rosters and aborts
    poll_s: float = 0.1  # secure aggregation's fallback re-read of the store (posts wake it at once)


def ask(hospitals: Hospitals, cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None,
        chosen: list[str], train: bool, stats: bool, how: Asking, session: str | None = None,
        absent: tuple[str, ...] = (), validate: bool = True, audit: bool = False) -> RoundAnswers:
    """`absent`: sampled hospitals known to be offline. They stay parties of the plan (the others' floors
    see the round's true size) but get no dispatch and are not waited for. `audit`: the privacy audit's
    membership dispatch (no training, no secure aggregation: each answer carries figures only)."""
    started, timeout = time.monotonic(), cfg.policy.round_timeout_s
    secure_on = cfg.secure_aggregation.enabled and not audit
    round_plan, layout, start = None, None, None
    if secure_on:
        start = stats_start() if stats or global_ref is None else how.store.get_weights(global_ref)
        layout = layout_for(cfg, start, train, stats, validate)
        model = "" if global_ref is None else global_ref.digest
        round_plan = plan(cfg, server_round, [*chosen, *absent], layout, model, stats, timeout, session,
                          purpose(train, stats, validate))
    dispatches = {h: Dispatch(server_round, global_ref, train and not audit, stats, secrets.token_hex(16), round_plan,
                              validate and not audit, audit) for h in chosen}
    not_started = hospitals.start(dispatches) | {h: "its agent is offline" for h in absent}
    secure, aborted = None, ""
    if round_plan is not None and layout is not None:
        secure, aborted = _secure(hospitals, cfg, how, dispatches, not_started, round_plan, layout, start, stats,
                                  started)
    finished = hospitals.finish(started + timeout)
    registry = how.registry()  # again: a revocation during the round counts
    outcomes = [_outcome(h, dispatches[h], not_started, finished, how, registry, cfg, time.monotonic() - started)
                for h in chosen]
    if secure is not None:
        outcomes, void = _in_the_sum(outcomes, secure, registry)
        if void:
            secure, aborted = None, void
    return RoundAnswers(outcomes, secure, aborted, _pooled(outcomes, secure))


def _secure(hospitals: Hospitals, cfg: FederationConfig, how: Asking, dispatches: dict[str, Dispatch],
            not_started: dict[str, str], round_plan: dict[str, Any], layout: Any, start: Any, stats: bool,
            started: float) -> tuple[SecureOutcome | None, str]:
    """The coordinator's side of the protocol, admitting into the sum only hospitals that are active on
    the roster and whose signed mask message answers their own dispatch."""
    registry = how.registry()
    verify = _verifier(registry)

    def admit(masks: dict[str, dict[str, Any]]) -> dict[str, str]:
        now = how.registry()
        refused = {}
        for h, m in masks.items():
            entry = now.get(h)
            if entry is None or entry.status != "active":
                refused[h] = f"{h} is not an active hospital of the signed roster (revoked during the round)"
            elif h not in dispatches:
                refused[h] = f"{h} was not asked in this round"
            elif m["payload"].get("nonce") != dispatches[h].nonce:
                refused[h] = f"{h}'s mask message answers another dispatch (nonce mismatch): a replay"
        return refused

    sr = SecureRound(how.store, how.mailbox, verify, how.signer, cfg.policy.min_hospitals, how.poll_s)
    deadlines = Deadlines(cfg.secure_aggregation.stage_timeout_s, started + cfg.policy.round_timeout_s)
    try:
        return coordinate(sr, cfg, round_plan, layout, start, stats, deadlines,
                          lambda: hospitals.gone() | set(not_started), admit), ""
    except SecAggAbort as exc:
        return None, str(exc)


def _verifier(registry: Mapping[str, RegistryEntry]) -> Callable[[str, bytes, bytes], bool]:
    from primia.signing import verifier_for

    return verifier_for({h: e.signing_public_key for h, e in registry.items() if e.status == "active"})


def _outcome(h: str, d: Dispatch, not_started: dict[str, str], finished: dict[str, str], how: Asking,
             registry: Mapping[str, RegistryEntry], cfg: FederationConfig, seconds: float) -> Outcome:
    if h in not_started:
        return Outcome(h, DROPPED, not_started[h], seconds=seconds)
    if finished.get(h, "no answer"):
        return Outcome(h, DROPPED, finished.get(h, "no answer"), seconds=seconds)
    raw = how.mailbox(h).find_json(d.server_round, result_name(h, d.nonce))
    if raw is None:
        return Outcome(h, REJECTED, "run completed but stored no signed answer", seconds=seconds)
    try:
        signed = signed_from_dict(raw)
    except ValueError as exc:
        return Outcome(h, REJECTED, f"malformed answer: {exc}", seconds=seconds)
    verdict = verify_result(signed, registry, cfg.federation_id, d.server_round, set(), expected_hospital=h,
                            expected_nonce=d.nonce)
    outcome = Outcome(h, ACCEPTED if verdict.accepted else REJECTED, verdict.reason, verdict.result, seconds=seconds)
    if d.audit and outcome.status == ACCEPTED and verdict.result is not None:
        try:
            check_membership_report(dict(verdict.result.metrics))
        except ValueError as exc:
            return Outcome(h, REJECTED, f"its membership-audit answer is not the figures asked for: {exc}",
                           seconds=seconds)
    update = verdict.result.update if verdict.result else None
    slot = how.mailbox(h).key_for(d.server_round, f"updates/{h}.safetensors")
    if d.train and d.secagg is None and outcome.status == ACCEPTED and (update is None or update.key != slot):
        return Outcome(h, REJECTED, f"update reference {update.key if update else None} is not its slot {slot}",
                       seconds=seconds)
    return outcome


def _in_the_sum(outcomes: list[Outcome], secure: SecureOutcome, registry: Mapping[str, RegistryEntry]
                ) -> tuple[list[Outcome], str]:
    """Under secure aggregation a hospital is accepted exactly when its vector is in the sum. One in the
    sum whose answer was rejected, or that is no longer active on the roster, voids the attempt."""
    out, void = [], []
    for o in outcomes:
        if o.hospital in secure.included:
            entry = registry.get(o.hospital)
            if o.status == REJECTED:
                void.append(f"{o.hospital} is in the sum but its answer was rejected ({o.reason})")
            elif entry is None or entry.status != "active":
                void.append(f"{o.hospital} is in the sum but is no longer active on the signed roster")
            reason = "in the sum" if o.status == ACCEPTED else \
                "in the sum: dropped after masking, its self-mask rebuilt from its neighbours' shares"
            out.append(replace(o, status=ACCEPTED, reason=reason, result=o.result or _placeholder(o.hospital)))
        else:
            why = secure.reasons.get(o.hospital, "not in the secure sum")
            out.append(replace(o, status=DROPPED if o.status == ACCEPTED else o.status,
                               reason=why if o.status == ACCEPTED else f"{o.reason}; {why}", result=None))
    if void:
        return out, ("the attempt is void, nothing is committed: " + "; ".join(void))
    return out, ""


def _placeholder(hospital: str) -> HospitalResult:
    return HospitalResult(hospital, 0, 0, None, float("nan"), (), 0.0, {"masked": 1.0})


def _pooled(outcomes: list[Outcome], secure: SecureOutcome | None) -> Pooled:
    if secure is not None:
        s = secure.sums
        return Pooled(s.num_examples, s.train_loss, s.confusion, s.clipped)
    results = accepted_results(outcomes)
    if not results:
        return Pooled()
    total = sum(r.num_examples for r in results)
    losses = [r.train_loss * r.num_examples for r in results if not np.isnan(r.train_loss)]
    cms = [np.asarray(r.val_confusion) for r in results if np.asarray(r.val_confusion).size]
    return Pooled(total, sum(losses) / total if losses and total else float("nan"),
                  np.sum(cms, axis=0) if cms else None)


def input_normalization(store: CheckpointStore, answers: RoundAnswers) -> tuple[float, float]:
    """(mean, std) from the statistics pass: the unmasked mean under secure aggregation, else the
    weighted mean of the moments the hospitals reported in the clear."""
    if answers.secure is not None and answers.secure.mean is not None:
        moments = store.get_weights(answers.secure.mean)[STATS_KEY]
    else:
        results = accepted_results(answers.outcomes)
        moments = pooled_moments([np.array([r.metrics["input_mean_moment"], r.metrics["input_square_moment"]])
                                  for r in results], [r.num_examples for r in results])
    return mean_std(moments)
