"""Sample-level DP-SGD for one hospital's round, with Opacus.

Poisson sampling (rate q = 1 / ceil(N / batch)), per-sample gradients clipped to `max_grad_norm`
(flat clipping), Gaussian noise of `noise_multiplier * max_grad_norm`; every step is recorded by the
hospital's own accountant. The sampling and the noise draw from fresh operating-system randomness,
never from the federation's seed: the coordinator knows that seed and could otherwise replay the noise.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, Dataset

from primia.config import PrivacyConfig, TrainingConfig
from primia.errors import ConfigError
from primia.privacy.accounting import SampleAccount

# The fastest per-sample gradient mode measured per network (`primia bench dp`, 2-core CPU, 64x64).
FASTEST = {"small_cnn": "ew", "resnet18": "hooks", "densenet121": "hooks"}


def sample_rate(n: int, batch: int) -> float:
    """What Opacus' Poisson loader uses for a loader of ceil(n / batch) batches."""
    return 1.0 / math.ceil(n / batch)


def steps_per_round(n: int, batch: int, epochs: int) -> int:
    return epochs * math.ceil(n / batch)


def grad_sample_mode(cfg: PrivacyConfig, model_name: str) -> str:
    return FASTEST.get(model_name, "hooks") if cfg.grad_sample_mode == "auto" else cfg.grad_sample_mode


@dataclass(frozen=True)
class PrivateRun:
    loss: float
    steps: int


def train_private(model: nn.Module, dataset: Dataset, cfg: TrainingConfig, privacy: PrivacyConfig,
                  account: SampleAccount, optimizer: torch.optim.Optimizer, mode: str, epochs: int) -> PrivateRun:
    """Train `model` in place with DP-SGD; the account's accountant records every step."""
    if privacy.max_grad_norm <= 0 or account.noise <= 0:
        raise ConfigError("privacy.max_grad_norm and the noise multiplier must be positive")
    with warnings.catch_warnings():  # "secure RNG turned off": torchcsprng is not available; see the docstring
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=account.kind)
    engine.accountant = account.accountant  # the federation-long account, never a fresh one
    sampling = torch.Generator().manual_seed(secrets.randbits(63))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, generator=sampling)
    criterion = nn.CrossEntropyLoss()
    before = account.steps
    model.train()  # Opacus validates the module in training mode
    made = engine.make_private(module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
                               noise_multiplier=account.noise, max_grad_norm=privacy.max_grad_norm,
                               poisson_sampling=True, grad_sample_mode=mode,
                               noise_generator=torch.Generator().manual_seed(secrets.randbits(63)))
    if mode == "ghost":
        dp_model, dp_opt, dp_criterion, dp_loader = made
    else:
        (dp_model, dp_opt, dp_loader), dp_criterion = made, criterion
    if abs(1 / len(loader) - account.sample_rate) > 1e-12:  # what Opacus' hook records each step
        raise ConfigError(f"Opacus samples at rate {1 / len(loader)}, the account at {account.sample_rate}")
    dp_model.train()
    mean = float("nan")
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            for x, y in dp_loader:
                dp_opt.zero_grad(set_to_none=True)
                loss = dp_criterion(dp_model(x), y)
                loss.backward()
                dp_opt.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
            mean = total / max(count, 1)
    finally:
        dp_model._close()  # the hooks go: the module is the plain network again
    return PrivateRun(mean, account.steps - before)
