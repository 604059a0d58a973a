"""The three promotion gates: quality, privacy, audit. Each says pass or fail, why, and its figures.

Privacy fails closed: a version whose privacy record is missing, unsigned or not differentially
private (when the policy requires DP) fails; an audit that is missing or not PASS fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from primia.registry.policy import PromotionPolicy

PASS, FAIL = "PASS", "FAIL"


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        out = {f"primia.gate.{self.name}": PASS if self.passed else FAIL,
               f"primia.gate.{self.name}.reason": self.reason}
        out |= {f"primia.gate.{self.name}.{k}": _text(v) for k, v in self.figures.items()}
        return out


def _text(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def quality(policy: PromotionPolicy, score: float, champion: float | None, champion_version: str | None) -> Gate:
    """`score`: the version's metric on the held-out set; `champion`: the current champion's (None: none,
    or the version is the champion being re-checked)."""
    q = policy.quality
    figures: dict[str, Any] = {"metric": q.metric, "score": score, "floor": q.floor, "tolerance": q.tolerance}
    if champion is not None:
        figures |= {"champion_score": champion, "champion_version": champion_version or ""}
    if math.isnan(score):
        return Gate("quality", False, f"test {q.metric} is undefined (NaN)", figures)
    if score < q.floor:
        return Gate("quality", False, f"test {q.metric} {score:.4f} is below the floor {q.floor:.4f}", figures)
    if champion is not None and score < champion - q.tolerance:
        return Gate("quality", False, f"test {q.metric} {score:.4f} is below champion v{champion_version}'s "
                                      f"{champion:.4f} minus the tolerance {q.tolerance:.4f}", figures)
    against = f", champion v{champion_version} {champion:.4f}" if champion is not None else ""
    return Gate("quality", True, f"test {q.metric} {score:.4f} (floor {q.floor:.4f}{against})", figures)


def privacy(policy: PromotionPolicy, record: dict[str, Any] | None) -> Gate:
    """`record`: the privacy statement of the signed manifest the version's checkpoint belongs to."""
    p = policy.privacy
    figures: dict[str, Any] = {"max_epsilon": p.max_epsilon, "max_delta": p.max_delta}
    if not record:
        return Gate("privacy", False, "no signed privacy record for the version's checkpoint", figures)
    mode = str(record.get("mode", "off"))
    figures["mode"] = mode
    if mode == "off":
        if p.require_dp:
            return Gate("privacy", False, "trained without differential privacy (privacy.mode off) and the "
                                          "policy requires DP", figures)
        return Gate("privacy", True, "trained without differential privacy; the policy allows it", figures)
    eps, delta = record.get("epsilon"), record.get("delta")
    figures |= {"epsilon": eps if eps is not None else "unknown", "delta": delta if delta is not None else "unknown",
                "accountant": str(record.get("accountant", ""))}
    if eps is None or delta is None:
        return Gate("privacy", False, "the privacy record states no epsilon or delta spent", figures)
    if float(delta) > p.max_delta:
        return Gate("privacy", False, f"delta {float(delta):.3g} is above the policy's {p.max_delta:.3g}", figures)
    if float(eps) > p.max_epsilon:
        return Gate("privacy", False, f"epsilon {float(eps):.4g} is above the policy's budget "
                                      f"{p.max_epsilon:.4g}", figures)
    return Gate("privacy", True, f"epsilon {float(eps):.4g} <= {p.max_epsilon:.4g} at delta {float(delta):.3g}",
                figures)


def audit(policy: PromotionPolicy, verdict: str | None, detail: str = "") -> Gate:
    """`verdict`: the latest audit's verdict of the version (None: never audited)."""
    if not policy.audit.required:
        return Gate("audit", True, "the policy does not require an audit", {"verdict": verdict or "not audited"})
    if verdict is None:
        return Gate("audit", False, "not audited: no privacy audit of this version", {"verdict": "not audited"})
    if verdict != PASS:
        return Gate("audit", False, f"the latest audit says {verdict}" + (f": {detail}" if detail else ""),
                    {"verdict": verdict})
    return Gate("audit", True, "the latest audit passed" + (f": {detail}" if detail else ""), {"verdict": verdict})
