"""Round policy: who is asked in a round, and whether enough answered (pure functions).

The roster is the federation's hospitals: named in the config, or (distributed mode, none named)
every active hospital of the signed roster. Each round samples from it with a seed derived from the
federation seed, round and attempt, so a resumed federation asks the same hospitals again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from primia.config import FederationConfig, RoundPolicy
from primia.errors import ConfigError, RoundFailedError
from primia.messages import HospitalResult

ACCEPTED, REJECTED, DROPPED = "accepted", "rejected", "dropped"


@dataclass(frozen=True)
class Outcome:
    """What became of one hospital's part in a round: accepted (with its result), rejected (an answer
    that failed verification) or dropped (no usable answer in time); `reason` says why."""

    hospital: str
    status: str
    reason: str = "ok"
    result: HospitalResult | None = None
    seconds: float = 0.0


def roster(cfg: FederationConfig, mode: str, active: Sequence[str] | None = None,
           revoked: Sequence[str] = ()) -> tuple[str, ...]:
    """The hospitals this federation may ask. Embedded: those in the config, each with its data.
    Distributed: those named (no data paths: they are hospital-local) or all active ones of the signed
    roster; a named hospital that was revoked is left out, one never on the roster is an error."""
    if mode == "embedded":
        if not cfg.hospitals:
            raise ConfigError("hospitals: embedded mode needs the hospitals, each with data.path, in the config")
        for i, h in enumerate(cfg.hospitals):
            if h.data is None:
                raise ConfigError(f"hospitals[{i}] ({h.name}): embedded mode needs data.path "
                                  "(or set PRIMIA_MODE=distributed to train on hospital agents)")
        names = tuple(h.name for h in cfg.hospitals)
    else:
        for i, h in enumerate(cfg.hospitals):
            if h.data is not None:
                raise ConfigError(f"hospitals[{i}] ({h.name}): in distributed mode data paths stay at the hospital "
                                  "(PRIMIA_HOSPITAL__DATA__PATH of its agent); remove data from the config")
        registered = list(active or ())
        named = [h.name for h in cfg.hospitals if h.name not in revoked]
        missing = [n for n in named if n not in registered]
        if missing:
            raise ConfigError(f"hospitals: {', '.join(missing)} not active on the signed roster "
                              f"(active: {', '.join(sorted(registered)) or 'none'}); see `primia hospital list`")
        names = tuple(named if cfg.hospitals else sorted(registered))
    if len(names) < cfg.policy.min_hospitals:
        raise ConfigError(f"policy.min_hospitals is {cfg.policy.min_hospitals} but only {len(names)} hospitals "
                          f"can take part ({', '.join(names) or 'none'})")
    return names


def sample(names: Sequence[str], policy: RoundPolicy, seed: int, server_round: int, attempt: int = 0) -> list[str]:
    """`ceil(fraction * n)` hospitals, at least the quorum, drawn reproducibly for (seed, round, attempt)."""
    k = min(len(names), max(policy.min_hospitals, math.ceil(policy.sample_fraction * len(names))))
    if k == len(names):
        return list(names)
    rng = np.random.default_rng([seed, server_round, attempt])
    return sorted(str(n) for n in rng.choice(np.asarray(names), size=k, replace=False))


def accepted_results(outcomes: Sequence[Outcome]) -> list[HospitalResult]:
    return [o.result for o in outcomes if o.status == ACCEPTED and o.result is not None]


def check_quorum(outcomes: Sequence[Outcome], policy: RoundPolicy, server_round: int, attempt: int) -> None:
    """Raise RoundFailedError naming who was missing and why when fewer than the quorum were accepted."""
    ok = accepted_results(outcomes)
    if len(ok) >= policy.min_hospitals:
        return
    missing = "; ".join(f"{o.hospital}: {o.reason}" for o in outcomes if o.status != ACCEPTED)
    raise RoundFailedError(
        f"round {server_round} (attempt {attempt + 1} of {policy.round_retries + 1}): {len(ok)} of "
        f"{len(outcomes)} hospitals answered with an accepted update, quorum is {policy.min_hospitals} "
        f"(policy.min_hospitals) [{missing}]"
    )
