"""Gradient inversion: reconstruct training images from a model update.

Two objectives on the same loop: Inverting Gradients (Geiping et al., NeurIPS 2020: 1 - cosine
similarity of the gradients, summed over layers, plus total variation; Adam on the image in [0, 1];
several restarts, the best kept) and DLG (Zhu et al., NeurIPS 2019: squared L2 distance of the
gradients). Labels are recovered from the last layer first, as iDLG does (Zhao et al. 2020): for
softmax cross-entropy the bias gradient p - y is negative only at the true class of a single image.

The target is what the coordinator could see of an update: the gradient itself for one local step,
or (w_before - w_after) / lr for several, which points the same way; cosine similarity ignores the
scale, so the learning rate need not be known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Objective = Literal["inverting", "dlg"]


@dataclass(frozen=True)
class InversionConfig:
    objective: Objective = "inverting"
    steps: int = 400
    restarts: int = 2
    lr: float = 0.1
    tv_weight: float = 1e-4  # total variation: natural images are piecewise smooth
    seed: int = 0
    time_budget_s: float | None = None  # stop the remaining steps and restarts when it is spent


def parameter_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        create_graph: bool = False) -> list[torch.Tensor]:
    loss = nn.functional.cross_entropy(model(images), labels)
    return list(torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad],
                                    create_graph=create_graph))


def recover_labels(target: Sequence[torch.Tensor], num_images: int = 1) -> torch.Tensor:
    """iDLG: the classes whose last-layer bias gradient is most negative (exact for one image). For more
    images than classes, counts from the mean bias gradient g_c = mean(p_c) - n_c / N with the mean
    prediction taken as uniform (Geiping et al.'s batch estimate): n_c ~ N (1/K - g_c)."""
    bias = target[-1]
    if bias.ndim != 1:
        raise ValueError("label recovery needs the model's last parameter to be the head's bias")
    k = bias.numel()
    if num_images <= k:
        return torch.argsort(bias)[:num_images]
    share = (1.0 / k - bias).clamp_min(0)
    counts = torch.floor(share / share.sum().clamp_min(1e-12) * num_images).long()
    order = torch.argsort(bias)
    for i in range(num_images - int(counts.sum())):  # what rounding left, to the most likely classes
        counts[order[i % k]] += 1
    return torch.repeat_interleave(torch.arange(k), counts)[:num_images]


def _distance(grads: Sequence[torch.Tensor], target: Sequence[torch.Tensor], objective: Objective) -> torch.Tensor:
    if objective == "dlg":
        return sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))  # type: ignore[return-value]
    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm_g = torch.sqrt(sum((g * g).sum() for g in grads))  # type: ignore[arg-type]
    norm_t = torch.sqrt(sum((t * t).sum() for t in target))  # type: ignore[arg-type]
    return 1 - dot / (norm_g * norm_t + 1e-12)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class Reconstruction:
    images: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: torch.Tensor
    loss: float
    steps_run: int
    restarts_run: int
    cut: str  # what the time budget cut, "" if nothing


def invert(model: nn.Module, target: Sequence[torch.Tensor], shape: tuple[int, ...],
           labels: torch.Tensor | None = None, cfg: InversionConfig = InversionConfig()) -> Reconstruction:
    """The images (of `shape`, N first) whose gradient best matches `target`."""
    import time

    model.eval()  # GroupNorm only: train and eval agree; no dropout in primia's models
    labels = recover_labels(target, shape[0]) if labels is None else labels
    target = [t.detach() for t in target]
    started, best, steps_run, restarts_run, cut = time.perf_counter(), None, 0, 0, ""
    gen = torch.Generator().manual_seed(cfg.seed)
    for restart in range(cfg.restarts):
        logits = torch.randn(shape, generator=gen).mul_(0.5).requires_grad_(True)  # image = sigmoid(logits)
        opt = torch.optim.Adam([logits], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.steps // 2, cfg.steps * 3 // 4], gamma=0.1)
        for step in range(cfg.steps):
            if cfg.time_budget_s is not None and time.perf_counter() - started > cfg.time_budget_s:
                cut = f"time budget {cfg.time_budget_s:g} s: restart {restart + 1} stopped at step {step}"
                break
            opt.zero_grad()
            x = torch.sigmoid(logits)
            loss = _distance(parameter_gradients(model, x, labels, create_graph=True), target, cfg.objective)
            if cfg.objective == "inverting" and cfg.tv_weight:
                loss = loss + cfg.tv_weight * total_variation(x)
            loss.backward()
            opt.step()
            sched.step()
            steps_run += 1
        restarts_run += 1
        x = torch.sigmoid(logits.detach())
        final = float(_distance(parameter_gradients(model, x, labels), target, cfg.objective))
        if best is None or final < best[1]:
            best = (x.detach().clone(), final)
        if cut:
            break
    assert best is not None
    if cut and restarts_run < cfg.restarts:
        cut += f"; {cfg.restarts - restarts_run} restart(s) not run"
    return Reconstruction(best[0], labels, best[1], steps_run, restarts_run, cut)
