"""Membership inference, run by a hospital on its own members (training samples) and non-members
(held-out samples); only the figures leave it.

Two attacks on the same scores:
- loss threshold (Yeom et al. 2018): a lower loss means "member";
- RMIA (Zarifzadeh et al., ICML 2024), offline with one or a few reference models that never saw the
  audited samples: the likelihood ratio LR(x) = Pr(y_x | x, target) / Pr(y_x | x) with
  Pr(y_x | x) = ((1 + a) mean_ref + (1 - a)) / 2 (the paper's offline approximation of the in/out mean),
  compared pairwise with population samples z: score(x) = share of z with LR(x) / LR(z) > gamma.
Figures: ROC-AUC and the TPR at 1% and 0.1% FPR (Carlini et al.: what matters is the low-FPR regime).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn


def roc_figures(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% / 0.1% FPR of "higher score = member" (the TPR at the largest FPR not above it)."""
    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if m.size == 0 or n.size == 0:
        raise ValueError(f"membership figures need members and non-members, got {m.size} and {n.size}")
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    s = np.r_[m, n]
    fpr, tpr, _ = roc_curve(y, s)
    auc = float(roc_auc_score(y, s))
    return {"auc": auc, "auc_lower95": auc - 1.645 * _auc_se(auc, m.size, n.size),
            "tpr_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01),
            "tpr_at_01pct_fpr": _tpr_at(fpr, tpr, 0.001), "members": float(m.size), "nonmembers": float(n.size)}


def _auc_se(auc: float, members: int, nonmembers: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC estimated from these sample sizes (the AUC kept
    half a sample from 0 and 1, where their formula would claim certainty)."""
    edge = 1 / (2 * min(members, nonmembers))
    auc = min(max(auc, edge), 1 - edge)
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (members - 1) * (q1 - auc ** 2) + (nonmembers - 1) * (q2 - auc ** 2)) \
        / (members * nonmembers)
    return float(np.sqrt(max(var, 0.0)))


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    ok = fpr <= at
    return float(tpr[ok].max()) if ok.any() else 0.0


@torch.no_grad()
def true_class_probability(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Pr(y | x) under `model`, per sample."""
    model.eval()
    out = [torch.softmax(model(x[i:i + batch]), 1).gather(1, y[i:i + batch, None])[:, 0]
           for i in range(0, len(y), batch)]
    return torch.cat(out).double().numpy()


def loss_attack(model: nn.Module, members: tuple[torch.Tensor, torch.Tensor],
                nonmembers: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Score = -cross-entropy = log Pr(y | x)."""
    sm = np.log(true_class_probability(model, *members) + 1e-30)
    sn = np.log(true_class_probability(model, *nonmembers) + 1e-30)
    return roc_figures(sm, sn)


def rmia_scores(target_p: np.ndarray, reference_p: np.ndarray, population_target_p: np.ndarray,
                population_reference_p: np.ndarray, a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA scores of audited samples. `*_p`: Pr(y | x) under the target and (rows: reference models,
    columns: samples) the reference models, for the audited samples and the population samples z."""
    def ratio(t: np.ndarray, ref: np.ndarray) -> np.ndarray:
        prior = ((1 + a) * np.atleast_2d(ref).mean(0) + (1 - a)) / 2
        return t / np.maximum(prior, 1e-30)

    lr_x = ratio(target_p, reference_p)
    lr_z = ratio(population_target_p, population_reference_p)
    return (lr_x[:, None] / np.maximum(lr_z[None, :], 1e-30) > gamma).mean(1)


def rmia_attack(model: nn.Module, references: Sequence[nn.Module], members: tuple[torch.Tensor, torch.Tensor],
                nonmembers: tuple[torch.Tensor, torch.Tensor],
                population: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """RMIA with reference models trained on neither the members nor the non-members audited."""
    if not references:
        raise ValueError("RMIA needs at least one reference model")

    def probs(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return true_class_probability(model, x, y), np.stack([true_class_probability(r, x, y) for r in references])

    pz, rz = probs(*population)
    sm = rmia_scores(*probs(*members), pz, rz)
    sn = rmia_scores(*probs(*nonmembers), pz, rz)
    return roc_figures(sm, sn)
