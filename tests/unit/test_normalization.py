"""Federated input normalisation: pooled pixel statistics, securely aggregated, carried in the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primia.config import SecureAggregationConfig
from primia.data.statistics import STATS_KEY, local_moments, mean_std, pooled_moments, stats_start
from primia.errors import ConfigError
from primia.federation.secure_update import decode_mean, encode_update, statistics_config, vector_length
from primia.models.factory import build_model, set_input_normalization
from primia.secure import inmemory
from primia.secure.protocol import Params


def _hospitals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(lo, hi, (n, 1, 8, 8)).astype(np.float32) for lo, hi, n in [(0, 1, 30), (0.2, 0.6, 70),
                                                                                   (0.5, 1, 11)]]


def test_weighted_moments_give_the_pooled_mean_and_std_exactly() -> None:
    parts = _hospitals()
    pooled = np.concatenate(parts)
    mean, std = mean_std(pooled_moments([local_moments(p) for p in parts], [len(p) for p in parts]))
    assert mean == pytest.approx(float(pooled.astype(np.float64).mean()), abs=1e-12)
    assert std == pytest.approx(float(pooled.astype(np.float64).std()), abs=1e-12)
    unweighted = np.mean([local_moments(p)[0] for p in parts])  # PriMIA's average of the nodes' means
    assert abs(unweighted - mean) > 0.01


def test_securely_aggregated_statistics_match_within_the_quantization_bound() -> None:
    sa, parts = statistics_config(SecureAggregationConfig()), _hospitals()
    names = ["a", "b", "c"]
    vectors = {n: encode_update(sa, {STATS_KEY: local_moments(p)}, stats_start(), len(p))[0]
               for n, p in zip(names, parts, strict=True)}
    run = inmemory.run(Params("fed", 0, "stats", tuple(names), vector_length(stats_start()), bits=64), vectors)
    moments, count = decode_mean(sa, run.result.total, stats_start())
    expect = pooled_moments([local_moments(p) for p in parts], [len(p) for p in parts])
    assert count == sum(len(p) for p in parts)
    assert np.abs(moments[STATS_KEY] - expect).max() <= sa.quantization_bound < 1e-11


def test_the_model_standardises_its_input_with_buffers_in_its_weights() -> None:
    model = build_model("small_cnn", num_classes=2)
    assert {"input_mean", "input_std"} <= set(model.state_dict())
    x = torch.rand(2, 1, 16, 16)
    model.eval()
    before = model(x)
    set_input_normalization(model, 0.5, 2.0)
    after = model(x)
    set_input_normalization(model, 0.0, 1.0)
    assert torch.allclose(model((x - 0.5) / 2.0), after) and torch.allclose(model(x), before)
    with pytest.raises(ConfigError, match="std must be > 0"):
        set_input_normalization(model, 0.0, 0.0)
