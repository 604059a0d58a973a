"""The audit's verdict: PASS or FAIL against mlflow/audit-policy.yaml, with every figure and reason,
and what the time budget cut. Fails closed: a required attack that did not run is a FAIL."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from primia.registry.policy import load_yaml_model

DEFAULT_AUDIT_POLICY = Path(__file__).resolve().parents[2] / "mlflow" / "audit-policy.yaml"
PASS, FAIL = "PASS", "FAIL"
MIN_NONMEMBERS_FOR_TPR = 100  # fewer cannot tell 1% FPR from 0%: the figure is reported, not judged


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconstructionBounds(_Strict):
    max_ssim: float = Field(default=0.5, gt=0, le=1)
    max_psnr: float = Field(default=20.0, gt=0)
    max_rdlv: float = Field(default=1.0)


class MembershipBounds(_Strict):
    max_auc: float = Field(default=0.65, ge=0.5, le=1)
    max_tpr_at_1pct_fpr: float = Field(default=0.1, ge=0, le=1)
    required: bool = True


class DpCheck(_Strict):
    lower_bound_le_accountant: bool = True


class AuditPolicy(_Strict):
    reconstruction: ReconstructionBounds = ReconstructionBounds()
    membership: MembershipBounds = MembershipBounds()
    dp_check: DpCheck = DpCheck()
    halt_on_fail: bool = False


def load_audit_policy(path: str | Path | None = None) -> AuditPolicy:
    return load_yaml_model(Path(path) if path else DEFAULT_AUDIT_POLICY, AuditPolicy, "audit policy")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reasons: list[str]
    figures: dict[str, float]
    cut: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "every attack stayed below the policy's bounds"


def judge(policy: AuditPolicy, figures: dict[str, float], cut: list[str] | None = None) -> Verdict:
    """`figures`: recon_ssim/psnr/rdlv (the worst case over views and objectives), mia_auc and
    mia_tpr_at_1pct_fpr (the worst hospital), eps_lower_bound and eps_accountant (when canaries ran)."""
    r, m, reasons = policy.reconstruction, policy.membership, []
    for key, bound in (("recon_ssim", r.max_ssim), ("recon_psnr", r.max_psnr), ("recon_rdlv", r.max_rdlv)):
        value = figures.get(key)
        if value is None or math.isnan(value):
            reasons.append(f"{key} not measured (the reconstruction attack did not run)")
        elif value > bound:
            reasons.append(f"{key} {value:.4g} > {bound:g}")
    notes = list(cut or [])
    if "mia_auc" in figures:
        # judged by what the sample shows: the AUC's one-sided 95% lower bound (Hanley-McNeil) when known
        auc = figures.get("mia_auc_lower95", figures["mia_auc"])
        if not auc <= m.max_auc:  # NaN fails
            reasons.append(f"membership AUC {figures['mia_auc']:.3f} (95% lower bound {auc:.3f}) > {m.max_auc:g}")
        missing = figures.get("mia_hospitals_missing", 0.0)
        if missing and m.required:
            reasons.append(f"membership audit: {missing:.0f} of the round's hospitals did not report its figures")
        nonmembers = figures.get("mia_nonmembers", math.inf)
        if nonmembers < MIN_NONMEMBERS_FOR_TPR:
            notes.append(f"membership TPR at 1% FPR not judged: {nonmembers:.0f} non-members cannot resolve 1% FPR")
        elif not figures.get("mia_tpr_at_1pct_fpr", 0.0) <= m.max_tpr_at_1pct_fpr:
            reasons.append(f"membership TPR at 1% FPR {figures['mia_tpr_at_1pct_fpr']:.3f} > {m.max_tpr_at_1pct_fpr:g}")
    elif m.required:
        reasons.append("membership attack not run and the policy requires it")
    if policy.dp_check.lower_bound_le_accountant and "eps_lower_bound" in figures:
        lb, acc = figures["eps_lower_bound"], figures.get("eps_accountant", math.inf)
        if not lb <= acc:
            reasons.append(f"one-run epsilon lower bound {lb:.3g} > the accountant's {acc:.3g}: a DP bug")
    return Verdict(FAIL if reasons else PASS, reasons, dict(figures), notes)
