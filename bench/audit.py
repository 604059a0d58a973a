"""`primia bench audit`: how sensitive the privacy audit is, and what it costs, on Br35H at 64x64.

- unprotected_*: gradient inversion (Inverting Gradients and DLG, the best kept) on a single-image update
  of the small CNN (batch 1, one step, no DP, no secure aggregation); `control_mlp_*` is the same attack
  on a network whose first layer sees the pixels (where the attack is known to work: the leak control).
- protected_*: the demo's defaults (configs/demo.yaml: 3 hospitals under secure aggregation, batch 128,
  DP-SGD at the demo's planned noise), as the per-round audit runs it; audit_s is its wall time.
- mia_auc_overfit: loss/RMIA membership on a small CNN trained 60 epochs on 64 images; mia_auc_demo: on a
  small CNN trained on one demo hospital's share for the federation's epochs (20 rounds x 2) with
  Poisson-sampled DP-SGD at the demo's batch, clipping and planned noise (plain SGD at lr 0.5, where the
  demo's hospitals use Adam: the privacy is the same, the model differs).
- eps_lower_bound / eps_accountant: the one-run canary check under the demo's DP; eps_lower_bound_no_dp:
  the same canaries without DP (mislabelled, memorised).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _data(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from primia.data.br35h import br35h_root
    from primia.data.readers import read_image_folder

    data = read_image_folder(br35h_root(), size, ("no", "yes"))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return torch.as_tensor(data.images)[order], torch.as_tensor(data.labels)[order]


def _recon(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Any, budget_s: float) -> dict[str, Any]:
    """The best reconstruction's figures and the verdict the audit policy gives them (reconstruction only:
    membership is measured apart here)."""
    from primia.audit.round_audit import reconstruction_audit
    from primia.audit.verdict import judge, load_audit_policy

    f = reconstruction_audit(model, x, y, plan, budget_s).figures()
    policy = load_audit_policy()
    policy = policy.model_copy(update={"membership": policy.membership.model_copy(update={"required": False})})
    return {k: f[f"recon_{k}"] for k in ("ssim", "psnr", "rdlv")} | {"verdict": judge(policy, f).verdict}


def bench_audit(budget_s: float = 60.0, canaries: int = 200) -> dict[str, Any]:
    from primia.audit.canaries import CanaryTraining, train_dp, train_plain
    from primia.audit.plan import RoundFacts, audit_plan
    from primia.audit.round_audit import AuditPlan, canary_check, hospital_membership
    from primia.audit.threat import ThreatModel
    from primia.config import load_federation_config
    from primia.models.factory import build_model, count_parameters

    x, y = _data(64)
    cfg = load_federation_config(DEMO)
    out: dict[str, Any] = {"machine": "2-core CPU", "image_size": 64}
    single = AuditPlan(ThreatModel(batch_size=1), steps=cfg.audit.steps, restarts=cfg.audit.restarts)
    small = build_model(cfg.model, seed=0)
    out |= {f"unprotected_{k}": v for k, v in _recon(small, x, y, single, budget_s).items()}
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 64), nn.ReLU(), nn.Linear(64, 2))
    out |= {f"control_mlp_{k}": v for k, v in _recon(mlp, x, y, single, budget_s).items()}

    per_hospital = 680  # what each demo hospital trains on (Br35H, 3 sites of ~800, 15% held out)
    facts = RoundFacts(3, 3 * per_hospital, True, count_parameters(small))
    plan, _ = audit_plan(cfg, facts, 600, seed=0)
    started = time.perf_counter()
    out |= {f"protected_{k}": v for k, v in _recon(small, x[:600], y[:600], plan, budget_s).items()}
    out["audit_s"] = time.perf_counter() - started
    out["protected_threat"] = f"{plan.threat.describe()}; attacked: that update and the mean of {plan.secure_hospitals}"

    members, heldout = (x[:64], y[:64]), (x[1000:1256], y[1000:1256])
    overfit = build_model(cfg.model, seed=1)
    train_plain(overfit, *members, CanaryTraining(60, 16, 3e-3, dp=False), torch.Generator().manual_seed(0))
    mia_over = hospital_membership(overfit, members, heldout)
    demo_like = build_model(cfg.model, seed=2)
    hospital = (x[:per_hospital], y[:per_hospital])
    p = cfg.privacy
    dp_demo = CanaryTraining(cfg.rounds * cfg.training.local_epochs, cfg.training.batch_size, 0.5, dp=True,
                             clip=p.max_grad_norm, noise_multiplier=plan.threat.noise_multiplier, delta=p.delta)
    train_dp(demo_like, *hospital, dp_demo, torch.Generator().manual_seed(0))
    mia_demo = hospital_membership(demo_like, hospital, heldout)
    out |= {"mia_auc_overfit": mia_over["mia_auc"], "mia_tpr_at_1pct_fpr_overfit": mia_over["mia_tpr_at_1pct_fpr"],
            "mia_auc_demo": mia_demo["mia_auc"], "mia_tpr_at_1pct_fpr_demo": mia_demo["mia_tpr_at_1pct_fpr"]}

    canary_x, canary_y = x[2000:2000 + 2 * canaries], y[2000:2000 + 2 * canaries]  # half canaries, half data
    no_dp = AuditPlan(ThreatModel(1), canaries=canaries, canary_training=CanaryTraining(40, 32, 3e-3, dp=False))
    out["eps_lower_bound_no_dp"] = canary_check(build_model(cfg.model, seed=3), canary_x, canary_y, 2,
                                                no_dp)["eps_lower_bound"]
    with_dp = AuditPlan(ThreatModel(1), canaries=canaries, canary_training=CanaryTraining(
        cfg.training.local_epochs * 4, 32, 0.5, dp=True, clip=p.max_grad_norm,
        noise_multiplier=plan.threat.noise_multiplier, delta=p.delta, accountant=p.accountant))
    dp = canary_check(build_model(cfg.model, seed=3), canary_x, canary_y, 2, with_dp)
    out |= {"eps_lower_bound": dp["eps_lower_bound"], "eps_accountant": dp["eps_accountant"],
            "canaries": canaries}
    return out
