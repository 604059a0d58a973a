"""Secure aggregation inside a federated round: the plan the coordinator sends, the hospital's part
around its training, and the coordinator's part that yields only sums over the hospitals."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from primia.config import LocalSpec, SecureAggregationConfig
from primia.data.statistics import stats_start
from primia.errors import PrimiaError, RoundFailedError
from primia.federation.secure_update import Layout, Sums, decode, statistics_config
from primia.messages import CheckpointRef
from primia.privacy.client_dp import mechanism
from primia.secure.protocol import Client, Floors, Ledger, Params, ProtocolViolation, SecAggAbort, Signer
from primia.secure.transport import (
    Admit,
    Channel,
    Coordinator,
    CoordinatorCheck,
    Deadlines,
    Gone,
    HospitalSide,
    Mailbox,
    ServerLog,
)
from primia.signing import Verifier
from primia.store.checkpoints import CheckpointStore
from primia.store.weights import encode as encode_weights

MEAN_NAME = "secagg/mean.safetensors"


def config_for(cfg: LocalSpec, stats: bool) -> SecureAggregationConfig:
    return statistics_config(cfg.secure_aggregation) if stats else cfg.secure_aggregation


def layout_for(cfg: LocalSpec, start: Mapping[str, Any] | None, train: bool, stats: bool, validate: bool = True
               ) -> Layout:
    """Statistics: two moments, no validation; training: update + tails (validation tail unless the
    incoming model was validated already); validation only: the tail."""
    if stats:
        return Layout.of(stats_start(), 0)
    return Layout.of(dict(start) if train and start is not None else None, cfg.model.num_classes if validate else 0)


def purpose(train: bool, stats: bool, validate: bool) -> str:
    if stats:
        return "statistics"
    return ("train+validate" if validate else "train") if train else "validate"


def plan(cfg: LocalSpec, server_round: int, hospitals: list[str], layout: Layout, model: str, stats: bool,
         round_timeout_s: float, session: str | None = None, what: str = "train+validate") -> dict[str, Any]:
    """Public parameters of this round's aggregation (a fresh session per attempt) for every party."""
    sa = config_for(cfg, stats)
    if len(hospitals) < 2:
        raise RoundFailedError(f"round {server_round}: secure aggregation needs at least 2 hospitals, the round has "
                               f"{len(hospitals)} (raise policy.sample_fraction or register more hospitals)")
    params = Params(cfg.federation_id, server_round, session or secrets.token_hex(8), tuple(sorted(hospitals)),
                    layout.length, sa.bits, sa.neighbours, sa.threshold_fraction, model, what)
    return {"params": params.to_dict(), "wait_s": round_timeout_s + 3 * sa.stage_timeout_s}


@dataclass(frozen=True)
class Expected:
    """What the hospital was dispatched for; the plan must say the same."""

    federation: str
    round: int
    model: str  # the dispatched global model's reference digest ("" for the statistics pass)
    purpose: str


def hospital_side(rosters: CheckpointStore, outbox: CheckpointStore, round_plan: dict[str, Any], me: str,
                  signer: Signer, verify: Verifier, coordinator: CoordinatorCheck, floors: Floors, ledger: Ledger,
                  expected: Expected, poll_s: float = 0.1) -> HospitalSide:
    """The hospital's protocol run for a plan, after its own floors (checked in Client) and a check that
    the plan is for the federation, round, global model and purpose it was dispatched for."""
    try:
        params, wait_s = Params.from_dict(round_plan["params"]), float(round_plan["wait_s"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolViolation(f"secure-aggregation plan needs 'params' and a numeric 'wait_s': {exc}") from None
    got = Expected(params.federation, params.round, params.model, params.purpose)
    if got != expected:
        def say(e: Expected) -> str:
            return f"{e.federation} round {e.round}, model {e.model[:12] or '(none)'} ({e.purpose})"

        raise ProtocolViolation(f"{me}: the plan is for {say(got)}; the dispatch asks for {say(expected)}: refused")
    return HospitalSide(Channel(rosters, lambda _: outbox, params, poll_s),
                        Client(params, me, signer, verify, floors, ledger), wait_s, coordinator)


@dataclass(frozen=True)
class SecureOutcome:
    sums: Sums
    mean: CheckpointRef | None  # start + weighted mean delta, stored (encrypted) for the strategy to use
    included: tuple[str, ...]
    recovered: tuple[str, ...]
    excluded: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class SecureRound:
    """The coordinator's inputs for one run of the protocol."""

    store: CheckpointStore  # the coordinator's own: rosters and the unmasked mean
    mailbox: Mailbox  # where each hospital's messages are
    verify: Verifier  # hospitals' keys from the signed roster
    signer: Signer  # the coordinator's key
    quorum: int = 0
    poll_s: float = 0.1  # fallback re-read of the store when no post woke the wait


def coordinate(sr: SecureRound, cfg: LocalSpec, round_plan: dict[str, Any], layout: Layout,
               start: Mapping[str, np.ndarray] | None, stats: bool, deadlines: Deadlines, gone: Gone,
               admit: Admit | None = None) -> SecureOutcome:
    """Run the coordinator's stages and decode the sums; raises SecAggAbort (after telling the
    hospitals) when the protocol cannot finish or the sum fails its bounds."""
    params, sa = Params.from_dict(round_plan["params"]), config_for(cfg, stats)
    log = ServerLog()
    channel = Channel(sr.store, sr.mailbox, params, sr.poll_s)
    coordinator = Coordinator(channel, sr.verify, sr.signer, deadlines, gone, log, sr.quorum, admit, sa.max_examples)
    unmasked = coordinator.serve()
    try:
        client = cfg.privacy.mode == "client" and layout.params and not stats
        scale = mechanism(cfg, layout.params).quantizer.scale if client else None
        sums = decode(sa, layout, unmasked.total, dict(start) if start is not None else None, len(unmasked.included),
                      unmasked.weight_bound, scale)
    except PrimiaError as exc:
        channel.abort(str(exc), sr.signer)
        raise SecAggAbort(f"round {params.round}: {exc}") from None
    ref = sr.store.put_object(params.round, MEAN_NAME, encode_weights(sums.mean)) if sums.mean is not None else None
    graph = "SecAgg" if unmasked.k >= unmasked.members - 1 else f"SecAgg+ (k={unmasked.k})"
    summary = (f"secure aggregation ON: {graph}, threshold {unmasked.threshold} of {unmasked.k + 1}, ring "
               f"Z_2^{sa.bits}, "
               + ("client-level DP (Skellam noise shares, L2 clip " + f"{cfg.privacy.clip_norm:g})" if scale else
                  f"{sa.frac_bits} fractional bits, clip {sa.clip:g}") + "; in the sum: "
               f"{', '.join(unmasked.included)}"
               + (f"; recovered after dropping: {', '.join(unmasked.recovered)}" if unmasked.recovered else "")
               + (f"; masks removed for: {', '.join(unmasked.excluded)}" if unmasked.excluded else ""))
    return SecureOutcome(sums, ref, unmasked.included, unmasked.recovered, unmasked.excluded, dict(log.reasons),
                         summary)
