"""The federation's networks evaluated on shares: the small CNN and MONAI's ResNet-18, as trained (GroupNorm,
input standardisation in the weights).

The architecture is public (both parties and the dealer walk the same modules); the weights and the image
are not: every weight, the input mean and 1/std are additive shares, so is every activation. Products are
carried at 2f fractional bits until the next truncation, so a convolution's truncation and the ReLU after
its normalisation come out of one adder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from primia.models.factory import ResidualBlock, SmallCNN
from primia.smpc.engine import Engine
from primia.smpc.ring import encode

Shares = dict[str, torch.Tensor]
NEWTON_STEPS = 4
INV_SQRT_BUCKETS = 47  # variance + eps from 2^-16 to 2^31 in the ring's fixed point


@dataclass
class Val:
    """A shared tensor and whether it still carries 2f fractional bits (a product not yet truncated)."""

    t: torch.Tensor
    double: bool = False


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model owner's plaintext: every parameter, and the input standardisation as mean and 1/std."""
    named = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()
             if k not in ("input_mean", "input_std")}
    named["input_mean"] = model.input_mean.detach().to(torch.float64).reshape(1)  # type: ignore[operator]
    named["input_inv_std"] = (1.0 / model.input_std.detach().to(torch.float64)).reshape(1)  # type: ignore[operator]
    return named


class Evaluator:
    def __init__(self, e: Engine, w: Shares) -> None:
        self.e, self.w, self.f = e, w, e.f

    # ------------------------------------------------------------------ helpers
    def settle(self, v: Val) -> torch.Tensor:
        return self.e.truncate(v.t) if v.double else v.t

    def lift(self, v: Val) -> torch.Tensor:
        """At 2f fractional bits (exact: a shift of a share)."""
        return v.t if v.double else v.t << self.f

    def scale_public(self, x: torch.Tensor, c: float) -> torch.Tensor:
        """x * c for a public real c (carried at 2f bits, so 1/6272 is not rounded to 1/6554), truncated
        exactly back to f bits; |x * c| must stay below 2^(62 - 3f) = 2^14."""
        return self.e.truncate_sign(x * int(round(c * (1 << 2 * self.f))), 2 * self.f)[0]

    def relu(self, v: Val) -> Val:
        return Val(self.e.relu_truncate(v.t) if v.double else self.e.relu(v.t))

    # ------------------------------------------------------------------ layers
    def input(self, x: torch.Tensor) -> Val:
        d = x - self.w["input_mean"].reshape(1, 1, 1, 1)
        return Val(self.e.mul(d, self.w["input_inv_std"].reshape(1, 1, 1, 1)), True)

    def conv(self, m: nn.Conv2d, name: str, v: Val) -> Val:
        f = partial(F.conv2d, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        y = self.e.bilinear(f, self.settle(v), self.w[f"{name}.weight"])
        if m.bias is not None:
            y = y + (self.w[f"{name}.bias"] << self.f).reshape(1, -1, 1, 1)
        return Val(y, True)

    def linear(self, name: str, v: Val) -> Val:
        y = self.e.bilinear(lambda a, b: a @ b.T, self.settle(v), self.w[f"{name}.weight"])
        return Val(y + (self.w[f"{name}.bias"] << self.f), True)

    def group_norm(self, m: nn.GroupNorm, name: str, v: Val) -> Val:
        x = self.settle(v)
        n, c = x.shape[:2]
        xg = x.reshape(n, m.num_groups, -1)
        size = xg.shape[-1]
        mu = self.scale_public(xg.sum(-1, keepdim=True), 1.0 / size)
        d = xg - mu
        ss = self.e.bilinear(lambda a, b: (a * b).sum(-1, keepdim=True), d, d)  # 2f bits, one value per group
        var = self.scale_public(self.e.truncate(ss), 1.0 / size)
        inv = self.inv_sqrt(var + self.e.public(torch.full_like(var, max(1, round(m.eps * (1 << self.f))))))
        per_channel = inv.repeat_interleave(c // m.num_groups, dim=1).reshape(n, c)
        gain = self.e.truncate(self.e.mul(per_channel, self.w[f"{name}.weight"].reshape(1, c)))
        y = self.e.mul(d.reshape(n, c, -1), gain.reshape(n, c, 1))
        y = y + (self.w[f"{name}.bias"] << self.f).reshape(1, c, 1)
        return Val(y.reshape(x.shape), True)

    def inv_sqrt(self, v: torch.Tensor) -> torch.Tensor:
        """1/sqrt(v) for shared v >= 2^-f: a start from v's binade (exact comparisons with 2^j, one adder),
        then Newton's y <- y (3 - v y^2) / 2."""
        j = torch.arange(INV_SQRT_BUCKETS, device=v.device)
        above = self.e.nonneg(v.unsqueeze(-1) - self.e.public(torch.ones_like(v).unsqueeze(-1) * (1 << j)))
        start = [encode(torch.tensor(1.0 / (1.5 * 2.0 ** (k - self.f)) ** 0.5)) for k in range(INV_SQRT_BUCKETS)]
        steps = torch.tensor([int(start[0])] + [int(start[k] - start[k - 1]) for k in range(1, INV_SQRT_BUCKETS)],
                             device=v.device)
        y = (above * steps).sum(-1)
        for _ in range(NEWTON_STEPS):
            vy = self.e.truncate(self.e.mul(v, y))
            vyy = self.e.truncate(self.e.mul(vy, y))
            y = self.e.truncate_sign(self.e.mul(y, self.e.public(torch.full_like(y, 3 << self.f)) - vyy),
                                     self.f + 1)[0]
        return y

    def max_pool(self, m: nn.MaxPool2d, v: Val) -> Val:
        """Over post-ReLU values (>= 0), so zero padding is the same as minus infinity."""
        x = self.settle(v)
        k, s, p = (_square(m.kernel_size), _square(m.stride), _square(m.padding))
        n, c, h, w = x.shape
        windows = list(_unfold_int(x.reshape(n * c, 1, h, w), k, s, p).unbind(1))
        while len(windows) > 1:
            half = len(windows) // 2
            best = self.e.maximum(torch.stack(windows[:half]), torch.stack(windows[half:2 * half]))
            windows = [*best.unbind(0), *windows[2 * half:]]
        ho = (h + 2 * p - k) // s + 1
        return Val(windows[0].reshape(n, c, ho, -1))

    def avg_pool(self, v: Val) -> Val:
        x = self.settle(v)
        return Val(self.scale_public(x.sum((2, 3)), 1.0 / (x.shape[2] * x.shape[3])))


def _square(v: int | tuple[int, ...]) -> int:
    if isinstance(v, int):
        return v
    if len(set(v)) != 1:
        raise ValueError(f"max pooling: only square windows, strides and padding, got {v}")
    return int(v[0])


def _unfold_int(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """(N, 1, H, W) int64 -> (N, k*k, L) windows, zero padded, without leaving int64."""
    x = F.pad(x, (p, p, p, p))
    patches = x.unfold(2, k, s).unfold(3, k, s)  # N, 1, Ho, Wo, k, k
    n = x.shape[0]
    return patches.reshape(n, -1, k * k).transpose(1, 2)


def small_cnn(ev: Evaluator, m: SmallCNN, v: Val) -> Val:
    layers = list(m.features)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Conv2d):
            v = ev.conv(layer, f"features.{i}", v)
        elif isinstance(layer, nn.GroupNorm):
            v = ev.group_norm(layer, f"features.{i}", v)
        elif isinstance(layer, nn.ReLU):
            v = ev.relu(v)
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            v = ev.avg_pool(v)
        i += 1
    return ev.linear("head", v)


def resnet(ev: Evaluator, m: ResNet, v: Val) -> Val:
    v = ev.relu(ev.group_norm(m.bn1, "bn1", ev.conv(m.conv1, "conv1", v)))  # type: ignore[arg-type]
    if isinstance(m.maxpool, nn.MaxPool2d):
        v = ev.max_pool(m.maxpool, v)
    for li in range(1, 5):
        for bi, block in enumerate(getattr(m, f"layer{li}")):
            v = _block(ev, block, f"layer{li}.{bi}", v)
    return ev.linear("fc", ev.avg_pool(v))


def _block(ev: Evaluator, b: ResidualBlock, name: str, v: Val) -> Val:
    if isinstance(b.downsample, nn.Sequential):
        conv, norm = cast(nn.Conv2d, b.downsample[0]), cast(nn.GroupNorm, b.downsample[1])
        residual = ev.group_norm(norm, f"{name}.downsample.1", ev.conv(conv, f"{name}.downsample.0", v))
    else:
        residual = v
    out = ev.relu(ev.group_norm(b.bn1, f"{name}.bn1", ev.conv(b.conv1, f"{name}.conv1", v)))
    out = ev.group_norm(b.bn2, f"{name}.bn2", ev.conv(b.conv2, f"{name}.conv2", out))
    return ev.relu(Val(ev.lift(out) + ev.lift(residual), True))


def program_for(model: nn.Module) -> Callable[[Evaluator, Val], Val]:
    if isinstance(model, SmallCNN):
        return lambda ev, v: small_cnn(ev, model, v)
    if isinstance(model, ResNet):
        return lambda ev, v: resnet(ev, model, v)
    raise ValueError(f"encrypted inference supports the small CNN and ResNet-18, not {type(model).__name__}")


def forward(e: Engine, model: nn.Module, w: Shares, image: torch.Tensor) -> torch.Tensor:
    """Shares of the logits (f fractional bits) for shares of a (N, C, H, W) fixed-point image."""
    ev = Evaluator(e, w)
    return ev.settle(program_for(model)(ev, ev.input(image)))

