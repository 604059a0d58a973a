"""Client-level DP through the secure-aggregation vector: each hospital's clipped, quantized and noised
update; the unmasked aggregate differs from the noiseless mean by the expected amount."""

from __future__ import annotations

import numpy as np
import pytest

from primia.config import LocalSpec, SecureAggregationConfig
from primia.federation.secure_update import Contribution, Layout, decode, encode
from primia.privacy.client_dp import HONEST, mechanism, privatize

P, H = 30_000, 3


def _spec(noise: float) -> LocalSpec:
    return LocalSpec.model_validate({"federation_id": "fed", "rounds": 5, "privacy": {
        "mode": "client", "clip_norm": 1.0, "noise_multiplier": noise, "target_epsilon": 50}})


def test_the_unmasked_aggregate_differs_from_the_noiseless_mean_by_the_expected_amount() -> None:
    spec = _spec(1.0)
    sa: SecureAggregationConfig = spec.secure_aggregation
    plan = mechanism(spec, P)
    rng = np.random.default_rng(5)
    start = {"w": np.zeros(P, dtype=np.float32)}
    updates = [rng.normal(0, 0.004, P) for _ in range(H)]  # norms about 0.7: below the clip
    layout, total = Layout.of(start, 0), None
    for u in updates:
        vec, _ = encode(sa, layout, Contribution(10, 0.5), {"w": u.astype(np.float32)}, start,
                        lambda d: privatize(plan, d, rng))
        total = vec if total is None else total + vec  # the masks cancel in the sum: the ring arithmetic stays
    sums = decode(sa, layout, total, start, H, H * sa.max_examples, plan.quantizer.scale)
    assert sums.mean is not None and sums.clipped == 0
    noiseless = np.mean([u.astype(np.float32).astype(np.float64) for u in updates], axis=0)
    error = sums.mean["w"].astype(np.float64) - noiseless
    # H shares of variance mu / HONEST each, divided by scale * H; rounding adds at most 1/4 per share
    expected = np.sqrt(H * plan.variance / HONEST) / (plan.quantizer.scale * H)
    assert np.std(error) == pytest.approx(expected, rel=0.03)
    assert abs(float(np.mean(error))) < 5 * expected / np.sqrt(P)


def test_a_large_update_is_clipped_and_said_so() -> None:
    plan = mechanism(_spec(0.5), P)
    x, clipped = plan.quantizer.clip_vector(np.full(P, 0.1))  # norm 17.3
    assert clipped and np.linalg.norm(x) == pytest.approx(1.0)
    noisy, flag = privatize(plan, np.full(P, 0.1), np.random.default_rng(6))
    assert flag and noisy.dtype == np.int64
    # the signal at full scale plus the share's noise: the norm of the sum is what the two give
    expected = np.sqrt(plan.quantizer.scale**2 + P * plan.share_variance)
    assert np.linalg.norm(noisy) == pytest.approx(expected, rel=0.02)


def test_a_hospital_refuses_client_dp_without_secure_aggregation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from primia.config import HospitalConfig
    from primia.errors import PrivacyError
    from primia.federation.private_round import open_client_release

    with pytest.raises(PrivacyError, match="asked for an update in the clear"):
        open_client_release(None, _spec(1.0), HospitalConfig(name="h1"), {"w": np.zeros(3, np.float32)}, None)
