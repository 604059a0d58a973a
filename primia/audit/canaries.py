"""The one-run DP check's training: a consenting (here simulated) hospital trains the round's model on its
images plus m mislabelled canaries, each included with probability 1/2, under the run's DP settings;
the auditor then scores every canary by its loss and turns its guesses into an epsilon lower bound
(primia.audit.one_run), shown beside the accountant's epsilon for the same training.

DP-SGD here is the mechanism the accountant analyses: Poisson sampling at rate q = batch / N, per-sample
clipping to `clip`, Gaussian noise of `noise_multiplier * clip` on the sum, divided by the expected batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from primia.audit.membership import true_class_probability
from primia.audit.one_run import OneRunAudit, audit_canaries
from primia.audit.threat import _clip_rows, _params, per_sample_gradients
from primia.privacy.accounting import epsilon_of, make_accountant


@dataclass(frozen=True)
class CanaryTraining:
    epochs: int
    batch_size: int
    lr: float
    dp: bool
    clip: float = 1.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    accountant: str = "prv"


@dataclass(frozen=True)
class CanaryResult:
    audit: OneRunAudit
    eps_accountant: float  # inf without DP

    def figures(self) -> dict[str, float]:
        return self.audit.figures() | {"eps_accountant": self.eps_accountant}


def mislabel(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Canaries carry a wrong label: only memorising them fits them."""
    return (y + 1) % num_classes


def run_canaries(model: nn.Module, x: torch.Tensor, y: torch.Tensor, canary_x: torch.Tensor, num_classes: int,
                 t: CanaryTraining, seed: int) -> CanaryResult:
    gen = torch.Generator().manual_seed(seed)
    coins = torch.rand(len(canary_x), generator=gen) < 0.5
    cy = mislabel(torch.randint(0, num_classes, (len(canary_x),), generator=gen), num_classes)
    train_x, train_y = torch.cat([x, canary_x[coins]]), torch.cat([y, cy[coins]])
    trained = copy.deepcopy(model)
    steps = (train_dp if t.dp else train_plain)(trained, train_x, train_y, t, gen)
    scores = np.log(true_class_probability(trained, canary_x, cy) + 1e-30)
    audit = audit_canaries(scores, coins.numpy(), t.delta)
    eps = float("inf")
    if t.dp:
        acc = make_accountant(t.accountant)  # type: ignore[arg-type]
        acc.history.append((t.noise_multiplier, t.batch_size / len(train_y), steps))
        eps = epsilon_of(acc, t.delta)
    return CanaryResult(audit, eps)


def train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: CanaryTraining, gen: torch.Generator) -> int:
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    model.train()
    steps = 0
    for _ in range(t.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(t.batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            steps += 1
    return steps


def train_dp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: CanaryTraining, gen: torch.Generator) -> int:
    """Poisson-sampled DP-SGD (SGD steps) on the parameters of `model`, in place; returns the steps."""
    n = len(y)
    q = t.batch_size / n
    steps = t.epochs * max(1, round(n / t.batch_size))
    params = {k: v.clone() for k, v in _params(model).items()}
    for _ in range(steps):
        idx = torch.nonzero(torch.rand(n, generator=gen) < q).flatten()
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        if len(idx):
            g = _clip_rows(per_sample_gradients(model, params, x[idx], y[idx]), t.clip)
            total = {k: v.sum(0) for k, v in g.items()}
        noisy = {k: v + torch.randn(v.shape, generator=gen) * t.noise_multiplier * t.clip for k, v in total.items()}
        params = {k: params[k] - t.lr * noisy[k] / t.batch_size for k in params}
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k in params:
                p.copy_(params[k])
    return steps
