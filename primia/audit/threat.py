"""What a curious coordinator sees of a round, simulated on the coordinator's own audit images.

A hospital's update under the run's real settings: `local_steps` steps of (DP-)SGD on batches of
`batch_size` from the round's model, each step's per-sample gradients clipped to `clip` and Gaussian
noise of `noise_multiplier * clip` added to their sum (sample-level DP-SGD, as Opacus does), or the whole
update clipped and noised once (client-level DP, the Skellam noise approximated by a Gaussian of the
same variance). The coordinator sees (w_before - w_after) / lr of one hospital without secure
aggregation, and only the mean over the round's hospitals with it: both views are built here so the
attacks can be run against exactly that. Never patient data: the images are the coordinator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

DpMode = Literal["off", "sample", "client"]


@dataclass(frozen=True)
class ThreatModel:
    """The round's settings as the coordinator knows them (config and round plan)."""

    batch_size: int
    local_steps: int = 1
    lr: float = 0.01
    dp: DpMode = "off"
    clip: float = 1.0  # sample: per-sample gradient bound; client: the update's L2 bound (in gradient units)
    noise_multiplier: float = 0.0
    hospitals: int = 1  # >1: secure aggregation, the coordinator sees only the mean of this many updates

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.local_steps < 1 or self.hospitals < 1:
            raise ValueError(f"threat model: batch_size, local_steps and hospitals must be >= 1, got {self}")
        if self.dp != "off" and not (self.clip > 0 and self.noise_multiplier >= 0):
            raise ValueError(f"threat model: DP needs clip > 0 and noise_multiplier >= 0, got {self}")

    @property
    def images_needed(self) -> int:
        return self.batch_size * self.local_steps * self.hospitals

    def describe(self) -> str:
        dp = "no DP" if self.dp == "off" else f"DP {self.dp} (clip {self.clip:g}, noise {self.noise_multiplier:.3g})"
        view = f"mean of {self.hospitals} hospitals (secure aggregation)" if self.hospitals > 1 else "one hospital"
        return f"{view}, batch {self.batch_size}, {self.local_steps} local step(s), {dp}"


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def per_sample_gradients(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each sample's loss gradient, (N, *shape) per parameter (torch.func: one vectorised pass)."""
    buffers = dict(model.named_buffers())

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)  # type: ignore[no-any-return]


def _clip_rows(g: dict[str, torch.Tensor], bound: float) -> dict[str, torch.Tensor]:
    norms = torch.sqrt(sum((t.flatten(1) ** 2).sum(1) for t in g.values()))  # type: ignore[arg-type]
    scale = (bound / (norms + 1e-12)).clamp(max=1.0)
    return {k: t * scale.view(-1, *([1] * (t.ndim - 1))) for k, t in g.items()}


def hospital_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: ThreatModel,
                    noise: torch.Generator) -> list[torch.Tensor]:
    """One hospital's (w_before - w_after) / lr over its local steps on (x, y), in parameter order."""
    model.eval()  # GroupNorm only: train and eval agree; primia's models have no dropout
    start = _params(model)
    params = {k: v.clone() for k, v in start.items()}
    for step in range(t.local_steps):
        xb, yb = x[step * t.batch_size:(step + 1) * t.batch_size], y[step * t.batch_size:(step + 1) * t.batch_size]
        g = per_sample_gradients(model, params, xb, yb)
        if t.dp == "sample":
            g = _clip_rows(g, t.clip)
        step_grad = {k: v.sum(0) for k, v in g.items()}
        if t.dp == "sample" and t.noise_multiplier > 0:
            step_grad = {k: v + torch.randn(v.shape, generator=noise) * t.noise_multiplier * t.clip
                         for k, v in step_grad.items()}
        params = {k: params[k] - t.lr * step_grad[k] / len(yb) for k in params}
    update = {k: (start[k] - params[k]) / t.lr for k in params}
    if t.dp == "client":  # the whole update clipped, then the hospital's share of the noise
        update = {k: v[0] for k, v in _clip_rows({k: v.unsqueeze(0) for k, v in update.items()}, t.clip).items()}
        share = t.noise_multiplier * t.clip / t.hospitals ** 0.5  # the shares sum to noise_multiplier * clip
        update = {k: v + torch.randn(v.shape, generator=noise) * share for k, v in update.items()}
    return [update[k] for k in start]


def coordinator_view(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: ThreatModel,
                     noise: torch.Generator) -> list[torch.Tensor]:
    """What the coordinator receives: one update, or the mean of `t.hospitals` updates on disjoint images."""
    per = t.batch_size * t.local_steps
    if len(y) < per * t.hospitals:
        raise ValueError(f"threat model needs {per * t.hospitals} audit images ({t.describe()}), got {len(y)}")
    updates = [hospital_update(model, x[h * per:(h + 1) * per], y[h * per:(h + 1) * per], t, noise)
               for h in range(t.hospitals)]
    return [torch.stack(parts).mean(0) for parts in zip(*updates, strict=True)]
