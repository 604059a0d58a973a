"""The hospitals' membership figures as the audit may use them: checked one report at a time (the coordinator
rejects any other), and the federation's worst case over them. Pure Python: the coordinator's round code
checks answers without loading torch."""

from __future__ import annotations

import math

from primia.federation.policy import ACCEPTED, Outcome

MEMBERSHIP_RATES = ("mia_loss_auc", "mia_loss_tpr_at_1pct_fpr", "mia_rmia_auc", "mia_rmia_tpr_at_1pct_fpr",
                    "mia_rmia_tpr_at_01pct_fpr", "mia_auc", "mia_auc_lower95", "mia_tpr_at_1pct_fpr",
                    "mia_tpr_at_01pct_fpr")
MEMBERSHIP_KEYS = (*MEMBERSHIP_RATES, "mia_nonmembers")  # what hospital_membership returns, and all it may


def check_membership_report(metrics: dict[str, object]) -> dict[str, float]:
    """A hospital's membership figures as the audit may use them, or ValueError naming what is wrong: exactly
    the known keys (a report cannot carry, say, a reconstruction figure into the verdict), finite numbers,
    AUCs and rates in [0, 1] (the lower bound in [-1, 1]), at least one non-member."""
    if set(metrics) != set(MEMBERSHIP_KEYS):
        odd = sorted(set(metrics) ^ set(MEMBERSHIP_KEYS))
        raise ValueError(f"membership figures must be exactly {', '.join(MEMBERSHIP_KEYS)} (differs in {odd})")
    out: dict[str, float] = {}
    for k in MEMBERSHIP_KEYS:
        v = metrics[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"membership figure {k} must be a finite number, got {v!r}")
        low = -1.0 if k == "mia_auc_lower95" else 0.0
        if k in MEMBERSHIP_RATES and not low <= v <= 1.0:
            raise ValueError(f"membership figure {k} must be in [{low:g}, 1], got {v!r}")
        if k == "mia_nonmembers" and v < 1:
            raise ValueError(f"membership figure mia_nonmembers must be at least 1, got {v!r}")
        out[k] = float(v)
    return out


def worst_membership(reports: list[dict[str, float]], asked: int | None = None) -> dict[str, float]:
    """The federation's figures: each one the worst hospital's (the fewest non-members for the count), and
    how many of the `asked` hospitals did not report (the verdict fails closed on them). Only the known
    keys are read, each report checked first."""
    if not reports:
        return {}
    checked = [check_membership_report(dict(r)) for r in reports]
    worst = {k: (min if k == "mia_nonmembers" else max)(r[k] for r in checked) for k in MEMBERSHIP_KEYS}
    return worst | {"mia_hospitals_missing": float(max(0, (asked or len(reports)) - len(reports)))}


def membership_from_answers(outcomes: list[Outcome], asked: int) -> tuple[dict[str, float], list[str]]:
    """The federation's membership figures from the hospitals' answers to the audit dispatch ({} when none
    reported), and a line for each hospital that did not (the verdict fails closed on them)."""
    reports = [dict(o.result.metrics) for o in outcomes if o.status == ACCEPTED and o.result is not None]
    missing = [f"membership audit: {o.hospital} did not report ({o.reason})" for o in outcomes
               if o.status != ACCEPTED or o.result is None]
    return worst_membership(reports, asked), missing
