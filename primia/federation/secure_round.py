"""Secure aggregation inside a federated round: the plan the coordinator sends, the hospital's part
around its training, and the coordinator's part that yields only the weighted mean of the updates."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from primia.config import LocalSpec
from primia.data.statistics import STATS_KEY, mean_std, pooled_moments, stats_start
from primia.errors import RoundFailedError
from primia.federation.policy import ACCEPTED, Outcome, accepted_results
from primia.federation.secure_update import decode_mean, statistics_config, vector_length
from primia.messages import CheckpointRef
from primia.secure.protocol import Client, Params, ProtocolViolation, Signer
from primia.secure.transport import Channel, Deadlines, Gone, HospitalSide, ServerLog, serve
from primia.signing import Verifier
from primia.store.checkpoints import CheckpointStore
from primia.store.weights import encode as encode_weights

MEAN_NAME = "secagg/mean.safetensors"


def plan(cfg: LocalSpec, server_round: int, hospitals: list[str], start_weights: Mapping[str, Any],
         round_timeout_s: float) -> dict[str, Any]:
    """Public parameters of this round's aggregation (a fresh session per attempt) for every party."""
    sa = statistics_config(cfg.secure_aggregation) if STATS_KEY in start_weights else cfg.secure_aggregation
    if len(hospitals) < 2:
        raise RoundFailedError(f"round {server_round}: secure aggregation needs at least 2 hospitals, the round has "
                               f"{len(hospitals)} (raise policy.sample_fraction or register more hospitals)")
    params = Params(cfg.federation_id, server_round, secrets.token_hex(8), tuple(sorted(hospitals)),
                    vector_length(dict(start_weights)), sa.bits, sa.neighbours, sa.threshold_fraction)
    return {"params": params.to_dict(), "wait_s": round_timeout_s + 3 * sa.stage_timeout_s}


def hospital_side(store: CheckpointStore, round_plan: dict[str, Any], me: str, signer: Signer,
                  verify: Verifier) -> HospitalSide:
    try:
        params, wait_s = Params.from_dict(round_plan["params"]), float(round_plan["wait_s"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolViolation(f"secure-aggregation plan needs 'params' and a numeric 'wait_s': {exc}") from None
    return HospitalSide(Channel(store, params), Client(params, me, signer, verify), wait_s)


@dataclass(frozen=True)
class SecureOutcome:
    mean: CheckpointRef  # start + weighted mean delta, stored (encrypted) for the strategy to use
    num_examples: int
    included: tuple[str, ...]
    recovered: tuple[str, ...]
    excluded: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def start_of(store: CheckpointStore, global_ref: CheckpointRef | None) -> dict[str, np.ndarray]:
    """What the round's updates are deltas from: the global model, or zeros for the statistics pass."""
    return stats_start() if global_ref is None else store.get_weights(global_ref)


def coordinate(store: CheckpointStore, cfg: LocalSpec, round_plan: dict[str, Any], start_ref: CheckpointRef | None,
               verify: Verifier, started: float, round_timeout_s: float, gone: Gone, quorum: int = 0) -> SecureOutcome:
    """Run the coordinator's stages; raises SecAggAbort (after telling the hospitals) below threshold."""
    params = Params.from_dict(round_plan["params"])
    sa = cfg.secure_aggregation if start_ref is not None else statistics_config(cfg.secure_aggregation)
    log = ServerLog()
    unmasked = serve(Channel(store, params), verify, Deadlines(sa.stage_timeout_s, started + round_timeout_s),
                     gone, log, quorum)
    mean, n_total = decode_mean(sa, unmasked.total, start_of(store, start_ref))
    ref = store.put_object(params.round, MEAN_NAME, encode_weights(mean))
    graph = "SecAgg" if params.k == len(params.parties) - 1 else f"SecAgg+ (k={params.k})"
    summary = (f"secure aggregation ON: {graph}, threshold {params.threshold} of {params.k + 1}, ring Z_2^{sa.bits}, "
               f"{sa.frac_bits} fractional bits, clip {sa.clip:g}; in the sum: {', '.join(unmasked.included)}"
               + (f"; recovered after dropping: {', '.join(unmasked.recovered)}" if unmasked.recovered else "")
               + (f"; masks removed for: {', '.join(unmasked.excluded)}" if unmasked.excluded else ""))
    return SecureOutcome(ref, n_total, unmasked.included, unmasked.recovered, unmasked.excluded,
                         dict(log.reasons), summary)

@dataclass(frozen=True)
class RoundAnswers:
    """What one attempt of a round produced: an outcome per asked hospital and, under secure
    aggregation, the unmasked mean (or why the protocol aborted)."""

    outcomes: list[Outcome]
    secure: SecureOutcome | None = None
    aborted: str = ""


def input_normalization(store: CheckpointStore, answers: RoundAnswers) -> tuple[float, float]:
    """(mean, std) from the statistics pass: the unmasked mean under secure aggregation, else the
    weighted mean of the moments the hospitals reported in the clear."""
    if answers.secure is not None:
        moments = store.get_weights(answers.secure.mean)[STATS_KEY]
    else:
        results = accepted_results(answers.outcomes)
        moments = pooled_moments([np.array([r.metrics["input_mean_moment"], r.metrics["input_square_moment"]])
                                  for r in results], [r.num_examples for r in results])
    return mean_std(moments)


def annotate(outcomes: list[Outcome], secure: SecureOutcome | None) -> list[Outcome]:
    """Add what the protocol knows to the outcomes of hospitals that did not answer cleanly."""
    if secure is None:
        return outcomes
    out = []
    for o in outcomes:
        extra = ""
        if o.hospital in secure.recovered:
            extra = "its masked update is in the sum: self-mask rebuilt from its neighbours' shares"
        elif o.status != ACCEPTED and o.hospital in secure.reasons:
            extra = secure.reasons[o.hospital]
        out.append(replace(o, reason=f"{o.reason}; {extra}") if extra else o)
    return out
