"""How much a reconstruction reveals: PSNR, SSIM (MONAI), MSE and NVFlare's relative data leakage
value RDLV = (SSIM(recon, x) - SSIM(prior, x)) / SSIM(prior, x), after matching each reconstruction
to its original (the Hungarian assignment on MSE: a batch's order is not recoverable)."""

from __future__ import annotations

import torch
from monai.metrics import PSNRMetric, SSIMMetric
from scipy.optimize import linear_sum_assignment


def match(recon: torch.Tensor, original: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (reconstruction, its original) by the Hungarian assignment on MSE; with fewer
    reconstructions than originals (a large batch), each is paired with the original it is closest to."""
    cost = ((recon[:, None] - original[None]) ** 2).flatten(2).mean(-1)  # (recon, original)
    rows, cols = linear_sum_assignment(cost.numpy())
    return recon[torch.as_tensor(rows)], original[torch.as_tensor(cols)]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, 2-D, data range 1 (MONAI's SSIMMetric, 7x7 window on images under 11 px a side)."""
    win = 11 if min(a.shape[-2:]) >= 11 else 7
    return torch.as_tensor(SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win)(a, b)).flatten()


def leakage(recon: torch.Tensor, original: torch.Tensor, prior: torch.Tensor) -> dict[str, float]:
    """The best matched reconstruction's figures (the audit judges the worst case)."""
    recon, original = match(recon.clamp(0, 1), original)
    s = ssim(recon, original)
    s_prior = ssim(prior.expand_as(original).clamp(0, 1), original)
    psnr = torch.as_tensor(PSNRMetric(max_val=1.0)(recon, original)).flatten()
    mse = ((recon - original) ** 2).flatten(1).mean(1)
    rdlv = (s - s_prior) / s_prior.clamp_min(1e-6)
    i = int(torch.argmax(s))
    return {"ssim": float(s[i]), "psnr": float(psnr[i]), "mse": float(mse[i]), "rdlv": float(rdlv[i]),
            "prior_ssim": float(s_prior[i])}
