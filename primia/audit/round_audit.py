"""One round's privacy audit: the attacks a curious coordinator could run on what it receives, within a
time budget, judged against the audit policy.

- Gradient inversion (Inverting Gradients and DLG) against (a) the update one hospital would send under
  the run's settings and (b) the mean the coordinator receives under secure aggregation, both simulated
  on the coordinator's own audit images. The worst case over views and objectives is judged.
- Membership inference figures come from the hospitals (hospital_membership, run where the members are).
- With canaries, the one-run DP check of a simulated consenting hospital (primia.audit.canaries).
What the budget cut (steps, restarts, views not attacked) is recorded with the verdict.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from primia.audit.canaries import CanaryTraining, run_canaries, train_plain
from primia.audit.inversion import InversionConfig, Objective, invert
from primia.audit.leakage import leakage, match
from primia.audit.membership import loss_attack, rmia_attack
from primia.audit.threat import ThreatModel, coordinator_view


@dataclass(frozen=True)
class AuditPlan:
    threat: ThreatModel  # one hospital's round as configured (hospitals=1)
    secure_hospitals: int = 0  # 0: secure aggregation off (the coordinator sees each update)
    attack_images: int = 4  # at most this many images reconstructed per view
    objectives: tuple[Objective, ...] = ("inverting", "dlg")
    steps: int = 3000
    restarts: int = 2
    time_budget_s: float = 60.0
    canaries: int = 0
    canary_training: CanaryTraining | None = None
    seed: int = 0


@dataclass
class Attack:
    view: str
    objective: str
    figures: dict[str, float]
    original: torch.Tensor
    recon: torch.Tensor
    cut: str


@dataclass
class ReconstructionAudit:
    attacks: list[Attack]
    prior: torch.Tensor
    cut: list[str]

    def worst(self) -> Attack | None:
        return max(self.attacks, key=lambda a: a.figures["ssim"], default=None)

    def figures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for a in self.attacks:
            out |= {f"recon_{a.view}_{a.objective}_{k}": v for k, v in a.figures.items()}
        w = self.worst()
        if w is not None:
            out |= {f"recon_{k}": v for k, v in w.figures.items()}
        return out


def views(plan: AuditPlan) -> list[tuple[str, ThreatModel]]:
    """What the coordinator sees: each update without secure aggregation, only their mean with it."""
    if plan.secure_hospitals > 1:
        return [("aggregate", replace(plan.threat, hospitals=plan.secure_hospitals)), ("single", plan.threat)]
    return [("single", plan.threat)]


def reconstruction_audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AuditPlan,
                         budget_s: float) -> ReconstructionAudit:
    """Attack every view with every objective, sharing `budget_s` among them; the secure-aggregation
    view (what the coordinator really receives) first."""
    prior = x.mean(0, keepdim=True)  # what the attacker knows without any update: the audit set's mean image
    noise = torch.Generator().manual_seed(plan.seed + 1)
    attacks, cut, started = [], [], time.perf_counter()
    todo = [(name, t, obj) for name, t in views(plan) for obj in plan.objectives]
    for i, (name, t, obj) in enumerate(todo):
        left = budget_s - (time.perf_counter() - started)
        if left <= 0.5:
            cut += [f"{n}/{o}: not attacked (time budget {budget_s:.0f} s spent)" for n, _, o in todo[i:]]
            break
        need = t.images_needed
        if len(y) < need:
            cut.append(f"{name}/{obj}: {t.describe()} needs {need} audit images, only {len(y)}: not attacked")
            continue
        target = coordinator_view(model, x[:need], y[:need], t, noise)
        shown = min(need, plan.attack_images)
        if shown < need:
            cut.append(f"{name}/{obj}: reconstructed {shown} of the {need} images in the update")
        cfg = InversionConfig(objective=obj, steps=plan.steps, restarts=plan.restarts, seed=plan.seed,
                              time_budget_s=left / (len(todo) - i))
        rec = invert(model, target, (shown, *x.shape[1:]), cfg=cfg, prior=prior)
        figures = leakage(rec.images, x[:need], prior)
        best, originals = match(rec.images.clamp(0, 1), x[:need])
        if rec.cut:
            cut.append(f"{name}/{obj}: {rec.cut}")
        attacks.append(Attack(name, obj, figures, originals, best, rec.cut))
    return ReconstructionAudit(attacks, prior, cut)


def hospital_membership(model: nn.Module, members: tuple[torch.Tensor, torch.Tensor],
                        heldout: tuple[torch.Tensor, torch.Tensor], heldout_groups: np.ndarray | None = None,
                        reference_epochs: int = 3, seed: int = 0) -> dict[str, float]:
    """Run at a hospital on its own samples: the loss-threshold attack and RMIA with one reference model
    trained on half of its held-out samples (the population; split by group, so no near-duplicate of an
    audited non-member is in it). Members are drawn to match the non-members class by class, one for one:
    otherwise a difference in class mix between the two sets alone would score as membership."""
    hx, hy = heldout
    if len(hy) < 4 or len(members[1]) < 2:
        raise ValueError(f"membership audit needs >= 2 members and >= 4 held-out samples, got {len(members[1])} "
                         f"and {len(hy)}")
    rng = np.random.default_rng(seed)
    pop, out = _halves(len(hy), heldout_groups, rng)
    population, nonmembers = (hx[pop], hy[pop]), (hx[out], hy[out])
    members, nonmembers = _matched(members, nonmembers, rng)
    reference = copy.deepcopy(model)
    train_plain(reference, *population, CanaryTraining(reference_epochs, 32, 1e-3, dp=False),
                torch.Generator().manual_seed(seed))
    loss = loss_attack(model, members, nonmembers)
    rmia = rmia_attack(model, [reference], members, nonmembers, population)
    return {"mia_loss_auc": loss["auc"], "mia_loss_tpr_at_1pct_fpr": loss["tpr_at_1pct_fpr"],
            "mia_rmia_auc": rmia["auc"], "mia_rmia_tpr_at_1pct_fpr": rmia["tpr_at_1pct_fpr"],
            "mia_rmia_tpr_at_01pct_fpr": rmia["tpr_at_01pct_fpr"],
            "mia_auc": max(loss["auc"], rmia["auc"]),
            "mia_auc_lower95": max(loss["auc_lower95"], rmia["auc_lower95"]),
            "mia_tpr_at_1pct_fpr": max(loss["tpr_at_1pct_fpr"], rmia["tpr_at_1pct_fpr"]),
            "mia_tpr_at_01pct_fpr": max(loss["tpr_at_01pct_fpr"], rmia["tpr_at_01pct_fpr"]),
            "mia_nonmembers": float(len(nonmembers[1]))}


def _halves(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the held-out samples, whole groups on each side when groups are known."""
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    chosen = rng.permutation(keys.max() + 1)[: (keys.max() + 1) // 2]
    first = np.isin(keys, chosen)
    if first.all() or not first.any():  # one group only: split by sample
        first = np.isin(np.arange(n), rng.permutation(n)[: n // 2])
    return np.flatnonzero(first), np.flatnonzero(~first)


def _matched(members: tuple[torch.Tensor, torch.Tensor], nonmembers: tuple[torch.Tensor, torch.Tensor],
             rng: np.random.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Equal numbers of members and non-members in every class."""
    keep_m, keep_n = [], []
    my, ny = members[1].numpy(), nonmembers[1].numpy()
    for c in np.unique(np.r_[my, ny]):
        im, inn = rng.permutation(np.flatnonzero(my == c)), rng.permutation(np.flatnonzero(ny == c))
        k = min(len(im), len(inn))
        keep_m += list(im[:k])
        keep_n += list(inn[:k])
    if len(keep_m) < 2:
        raise ValueError("membership audit: members and non-members share too few classes to compare")
    m, n = torch.as_tensor(np.array(keep_m)), torch.as_tensor(np.array(keep_n))
    return (members[0][m], members[1][m]), (nonmembers[0][n], nonmembers[1][n])


def canary_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, plan: AuditPlan
                 ) -> dict[str, float]:
    """The one-run DP check: plan.canaries of the audit images become canaries, the rest the simulated
    hospital's data."""
    if plan.canary_training is None or plan.canaries < 2:
        return {}
    m = min(plan.canaries, len(y) // 2)
    result = run_canaries(model, x[m:], y[m:], x[:m], num_classes, plan.canary_training, plan.seed)
    out = result.figures()
    if math.isinf(out["eps_accountant"]):
        out.pop("eps_accountant")
    return out
