"""DP-SGD through Opacus as primia runs it: the noise has the configured scale, it does not come from
the federation's (public) seed, and every step lands in the hospital's own account."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from primia.config import PrivacyConfig, TrainingConfig
from primia.errors import ConfigError
from primia.privacy.accounting import SampleAccount
from primia.privacy.dpsgd import sample_rate, train_private

D, N = 4096, 8


def _zero_gradient_step(sigma: float, clip: float) -> np.ndarray:
    """One DP-SGD step (q = 1) of plain SGD, lr 1, on inputs whose gradients are all zero: the weights
    move by the noise alone, divided by the expected batch size."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2, bias=False))
    start = model[1].weight.detach().clone()
    data = TensorDataset(torch.zeros(N, 1, D), torch.zeros(N, dtype=torch.long))
    account = SampleAccount.new("fed", "h1", "rdp", 1e-5, sigma, sample_rate(N, N))
    train_private(model, data, TrainingConfig(batch_size=N), PrivacyConfig(max_grad_norm=clip), account,
                  torch.optim.SGD(model.parameters(), lr=1.0), "hooks", epochs=1)
    assert account.steps == 1
    return ((start - model[1].weight.detach()) * N).numpy().ravel()


@pytest.mark.parametrize(("sigma", "clip"), [(1.0, 1.0), (0.5, 2.0), (3.0, 0.1)])
def test_the_noise_has_the_configured_scale(sigma: float, clip: float) -> None:
    noise = _zero_gradient_step(sigma, clip)
    # 8192 draws: the sample std is within 3 % of sigma * C with overwhelming probability (se about 0.8 %)
    assert np.std(noise) == pytest.approx(sigma * clip, rel=0.03)
    assert abs(float(np.mean(noise))) < 5 * sigma * clip / np.sqrt(noise.size)


def test_the_noise_is_fresh_whatever_the_seed() -> None:
    torch.manual_seed(7)  # the federation's seed is public: the coordinator could replay noise drawn from it
    a = _zero_gradient_step(1.0, 1.0)
    torch.manual_seed(7)
    b = _zero_gradient_step(1.0, 1.0)
    assert not np.allclose(a, b)


def test_an_account_whose_rate_is_not_the_loaders_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    data = TensorDataset(torch.zeros(N, 1, 4), torch.zeros(N, dtype=torch.long))
    account = SampleAccount.new("fed", "h1", "rdp", 1e-5, 1.0, 0.5)  # the loader samples at rate 1
    with pytest.raises(ConfigError, match="samples at rate"):
        train_private(model, data, TrainingConfig(batch_size=N), PrivacyConfig(), account,
                      torch.optim.SGD(model.parameters(), lr=1.0), "hooks", epochs=1)
