"""Client-level DP-FedAvg (McMahan et al. 2018) with the distributed Skellam mechanism.

Each hospital trains as usual, clips its whole update (local minus global weights, every tensor in
name order) to L2 norm `privacy.clip_norm`, quantizes it and adds its share of Skellam noise before
masking; the coordinator unmasks the noisy sum and divides by the number of hospitals in it (uniform
weights: a hospital's sample count is not in the released average).

Noise shares: every sum a hospital helps unmask holds more than colluders + 1 parties (the protocol's
floor), so at least two of them are honest; each hospital adds variance mu / 2 and every unmasked sum
carries at least the central variance mu, whether the others dropped out or colluded with the
coordinator and subtracted their own noise. The plan (scale, central variance) is the same at every
party: it is computed from the federation's config and the model's size alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from primia.config import LocalSpec
from primia.errors import PrivacyError
from primia.privacy import skellam
from primia.privacy.skellam import SkellamPlan

HONEST = 2  # honest contributors in every sum the protocol unmasks (sums need colluders + 2 parties)
STATE_VERSION = 1


def mechanism(spec: LocalSpec, dim: int) -> SkellamPlan:
    p, sa = spec.privacy, spec.secure_aggregation
    return skellam.plan(p.clip_norm, dim, sa.max_hospitals, HONEST, sa.bits, p.target_epsilon, p.delta,
                        p.planned_rounds or spec.rounds, p.noise_multiplier)


def privatize(plan: SkellamPlan, delta: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The hospital's noisy integer update and whether clipping scaled it down."""
    clipped, was_clipped = plan.quantizer.clip_vector(np.asarray(delta, dtype=np.float64))
    return plan.quantizer.quantize(clipped, rng) + plan.noise_share(rng), was_clipped


@dataclass
class ClientAccount:
    """How many releases of this hospital's update the federation has made (its composition count)."""

    federation: str
    hospital: str
    rounds: int = 0

    def state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "kind": "skellam", "federation": self.federation,
                "hospital": self.hospital, "rounds": self.rounds}

    @staticmethod
    def restore(state: dict[str, Any], federation: str, hospital: str) -> ClientAccount:
        got = (state.get("version"), state.get("kind"), state.get("federation"), state.get("hospital"))
        if got != (STATE_VERSION, "skellam", federation, hospital):
            raise PrivacyError(f"the stored privacy account is {got[1:]!r}, not ('skellam', {federation!r}, "
                               f"{hospital!r}): refusing to train on an account that is not this hospital's")
        return ClientAccount(federation, hospital, int(state["rounds"]))
