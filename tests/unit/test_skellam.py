"""The distributed Skellam mechanism: its RDP bound against the exact Renyi divergence of the Skellam
distribution, the noise's scale, the sum of the shares, clipping and rounding bounds, planning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from primia.errors import ConfigError, PrivacyError
from primia.privacy import skellam as sk


def exact_renyi(alpha: int, shift: int, variance: float) -> float:
    """D_alpha(Sk + shift || Sk) for the symmetric Skellam of the given variance, summed numerically."""
    lam = variance / 2
    span = int(25 * math.sqrt(variance)) + abs(shift) + 50
    k = np.arange(-span, span + 1)
    logp = stats.skellam.logpmf(k - shift, lam, lam)
    logq = stats.skellam.logpmf(k, lam, lam)
    terms = alpha * logp + (1 - alpha) * logq
    finite = np.isfinite(logp) & np.isfinite(logq)  # far tails underflow (their mass is below 1e-300)
    return float(logsumexp(terms[finite]) / (alpha - 1))


@pytest.mark.parametrize(("variance", "shift"), [(50.0, 1), (400.0, 3), (4000.0, 10), (20.0, 2)])
@pytest.mark.parametrize("alpha", [2, 8, 32])
def test_the_rdp_bound_holds_against_the_exact_divergence_and_is_close(variance: float, shift: int,
                                                                       alpha: int) -> None:
    exact = exact_renyi(alpha, shift, variance)
    bound = sk.rdp(alpha, float(shift), float(shift), variance)  # one coordinate: D1 = D2 = |shift|
    assert exact <= bound * (1 + 1e-9)
    gaussian = alpha * shift**2 / (2 * variance)  # the leading term
    assert bound - gaussian <= min(((2 * alpha - 1) * shift**2 + 6 * shift) / (4 * variance**2),
                                   3 * shift / (2 * variance)) + 1e-12
    if variance / shift**2 >= 40:  # plenty of noise: the bound is tight
        assert bound <= exact * 1.15


def test_with_much_noise_the_epsilon_is_the_gaussians() -> None:
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    l2, sigma, rounds = 1e4, 1.3, 30
    ours = sk.epsilon(rounds, l1=l2 * 300, l2=l2, variance=(sigma * l2) ** 2, delta=1e-5)
    orders = list(sk.ORDERS)
    with warnings.catch_warnings():  # the same order range as ours ("optimal order is the smallest alpha")
        warnings.simplefilter("ignore")
        gauss, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=1.0, noise_multiplier=sigma, steps=rounds,
                                                                    orders=orders), delta=1e-5)
    assert gauss <= ours <= gauss * 1.001


def test_noise_has_the_configured_variance_and_is_centred() -> None:
    rng = np.random.default_rng(1)
    for variance in (3.0, 1e4, 1e8, 2e13):  # the last is drawn in pieces (numpy's sampler drifts up there)
        z = sk.skellam_noise(400_000, variance, rng)
        assert z.dtype == np.int64
        # sample variance of 4e5 draws: relative standard error about sqrt(2/4e5) = 0.2 %
        assert np.var(z) == pytest.approx(variance, rel=0.015)
        assert abs(float(np.mean(z))) < 5 * math.sqrt(variance / z.size)


def test_the_sum_of_the_shares_has_the_full_variance() -> None:
    rng = np.random.default_rng(2)
    q = sk.Quantizer(dim=200_000, clip=1.0, scale=1e3)
    plan = sk.SkellamPlan(q, variance=(1.5 * q.l2) ** 2, honest=4)
    total = sum(plan.noise_share(rng) for _ in range(4))
    assert np.var(total) == pytest.approx(plan.variance, rel=0.02)
    assert np.var(plan.noise_share(rng)) == pytest.approx(plan.variance / 4, rel=0.02)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=64), st.floats(0.01, 10.0))
def test_every_clipped_update_is_within_the_bound_and_every_rounding_within_its_own(values: list[float],
                                                                                     clip: float) -> None:
    q = sk.Quantizer(dim=len(values), clip=clip, scale=1000.0 / clip)
    x, scaled = q.clip_vector(np.array(values))
    assert np.linalg.norm(x) <= clip * (1 + 1e-12)
    assert scaled == (np.linalg.norm(values) > clip)
    r = q.quantize(x, np.random.default_rng(0))
    assert float(np.linalg.norm(r)) <= q.l2 and np.abs(r - x * q.scale).max() < 1


def test_rounding_is_unbiased() -> None:
    q = sk.Quantizer(dim=4, clip=1.0, scale=10.0)
    x = np.array([0.123, -0.456, 0.05, 0.0])
    rng = np.random.default_rng(3)
    mean = np.mean([q.quantize(x, rng) for _ in range(20_000)], axis=0)
    assert mean == pytest.approx(x * 10, abs=0.02)


def test_a_planned_mechanism_meets_its_budget_and_its_ring() -> None:
    p = sk.plan(clip=0.5, dim=120_000, parties=8, honest=2, bits=32, target_epsilon=3.0, delta=1e-5, rounds=10)
    assert p.epsilon(10, 1e-5) <= 3.0 < p.epsilon(11, 1e-5)
    weaker = sk.SkellamPlan(p.quantizer, p.variance * 0.97, p.honest)
    assert weaker.epsilon(10, 1e-5) > 3.0  # the bisection found (almost) the least noise that fits
    assert p.wrap_probability(8, 32) <= sk.MAX_WRAP
    assert p.share_variance == pytest.approx(p.variance / 2)


def test_fails_closed() -> None:
    with pytest.raises(PrivacyError, match="positive variance"):
        sk.skellam_noise(3, 0.0, np.random.default_rng())
    with pytest.raises(ConfigError, match="noise_multiplier"):
        sk.plan(1.0, 10, 3, 1, 32, 1.0, 1e-5, 1, noise_multiplier=0.0)
    with pytest.raises(ConfigError, match="honest"):
        sk.plan(1.0, 10, 3, 0, 32, 1.0, 1e-5, 1)
    with pytest.raises(PrivacyError, match="non-finite"):
        sk.Quantizer(2, 1.0, 1.0).clip_vector(np.array([np.nan, 1.0]))
