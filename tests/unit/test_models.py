"""Model factory: shapes, DP-readiness (Opacus validator and per-sample gradients), bad names."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from primia.config import ModelConfig
from primia.errors import ConfigError
from primia.models.factory import build_model


@pytest.mark.parametrize("name,size", [("small_cnn", 32), ("resnet18", 32), ("densenet121", 32)])
def test_forward_and_dp_ready(name: str, size: int) -> None:
    model = build_model(ModelConfig(name=name, num_classes=3), seed=0)  # type: ignore[arg-type]
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    x = torch.randn(3, 1, size, size)
    gsm = GradSampleModule(model)  # hooks mode: fails on in-place residuals
    out = gsm(x)
    assert out.shape == (3, 3)
    out.sum().backward()
    p = next(q for q in model.parameters() if q.requires_grad)
    assert p.grad_sample.shape[0] == 3  # type: ignore[attr-defined]


def test_seeded_init_is_reproducible() -> None:
    a, b = build_model("small_cnn", seed=5), build_model("small_cnn", seed=5)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


def test_unknown_model_name() -> None:
    with pytest.raises(ConfigError, match="unknown model name 'vgg99': expected one of small_cnn, resnet18"):
        build_model("vgg99")
