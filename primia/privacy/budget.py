"""The coordinator's side of the budget: what the hospitals report, whether another round fits, and
the privacy statement that goes on each round's manifest.

Hospitals enforce their own budgets (they decline a round that would pass one, whatever the
coordinator asks); the coordinator stops the federation cleanly, before asking, when a round could no
longer reach its quorum within the federation's budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from primia.config import LocalSpec

DECLINED = "privacy budget"  # every budget refusal names this: the coordinator tells them from failures


def declined_for_budget(reason: str) -> bool:
    return DECLINED in reason


def reported(results: Sequence[Any]) -> dict[str, dict[str, float]]:
    """hospital -> its reported epsilon, projection and noise (sample-level DP)."""
    return {r.hospital: {k: float(r.metrics[k]) for k in ("epsilon", "epsilon_next", "noise_multiplier", "delta")
                         if k in r.metrics} for r in results if "epsilon" in r.metrics}


def stop_reason(spec: LocalSpec, reports: Mapping[str, Mapping[str, float]], quorum: int, asked: int) -> str:
    """Why the next round must not run ("" when it may): fewer hospitals than the quorum would stay
    within the federation's budget (every other asked hospital would decline)."""
    if not spec.privacy.enabled or not reports:
        return ""
    target = spec.privacy.target_epsilon
    over = {h: r["epsilon_next"] for h, r in reports.items() if r.get("epsilon_next", 0.0) > target}
    if asked - len(over) >= quorum:
        return ""
    worst = ", ".join(f"{h} {e:.3g}" for h, e in sorted(over.items()))
    return (f"{DECLINED}: the next round would take {len(over)} of {asked} hospitals past epsilon {target:g} "
            f"(delta {spec.privacy.delta:g}): {worst}; {asked - len(over)} could train, the quorum is {quorum}")


def statement(spec: LocalSpec, reports: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """What a round's manifest says of its privacy."""
    p = spec.privacy
    if p.mode == "off":
        return {"mode": "off"}
    base: dict[str, Any] = {"mode": p.mode, "target_epsilon": p.target_epsilon, "delta": p.delta,
                            "accountant": p.accountant}
    # before round 1 no hospital has trained the model: nothing spent on it (the normalisation moments
    # of the statistics pass are outside the budget, as the README says)
    base |= {"epsilon": max((r["epsilon"] for r in reports.values()), default=0.0),
             "hospitals": {h: {"epsilon": r.get("epsilon"), "noise_multiplier": r.get("noise_multiplier")}
                           for h, r in sorted(reports.items())}}
    if p.mode == "sample":
        base |= {"mechanism": "DP-SGD: subsampled Gaussian (Poisson sampling), per-sample clipping",
                 "max_grad_norm": p.max_grad_norm}
    else:
        base |= {"mechanism": "DP-FedAvg: distributed Skellam noise shares under secure aggregation, no sampling "
                              "amplification", "clip_norm": p.clip_norm, "accountant": "rdp (Skellam)"}
    return base
