"""Sample-level accounting: Opacus' accountants against an independent closed form, noise planning,
and the account's binding to its federation and hospital."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import PRVAccountant

from primia.errors import ConfigError, PrivacyError
from primia.privacy.accounting import SampleAccount, check_budget, plan_noise

ORDERS = list(range(2, 65))


def subsampled_gaussian_rdp(q: float, sigma: float, alpha: int) -> float:
    """Mironov, Talwar, Zhang (2019), integer alpha, exactly:
    eps(alpha) = log( sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2)) ) / (alpha - 1)."""
    logs = [math.log(math.comb(alpha, k)) + (alpha - k) * math.log1p(-q) + k * math.log(q)
            + (k * k - k) / (2 * sigma**2) for k in range(alpha + 1)] if q < 1 else \
        [alpha * (alpha - 1) / (2 * sigma**2)]
    top = max(logs)
    return (top + math.log(sum(math.exp(v - top) for v in logs))) / (alpha - 1)


def to_epsilon(rdp: list[float], delta: float) -> float:
    """RDP to (eps, delta), Balle et al. 2020 (Theorem 21), over the integer orders."""
    return min(r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
               for r, a in zip(rdp, ORDERS, strict=True))


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), [(0.01, 1.1, 1000, 1e-5), (0.05, 2.0, 300, 1e-6),
                                                           (0.1, 0.8, 50, 1e-5)])
def test_the_rdp_epsilon_is_the_closed_form_of_the_subsampled_gaussian(q: float, sigma: float, steps: int,
                                                                       delta: float) -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    ours = [steps * subsampled_gaussian_rdp(q, sigma, a) for a in ORDERS]
    assert list(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)) == pytest.approx(ours, rel=1e-9)
    account = SampleAccount.new("fed", "h1", "rdp", delta, sigma, q)
    account.accountant.history.append((sigma, q, steps))
    integer_only = to_epsilon(ours, delta)
    # the account also tries fractional orders (Opacus' grid): never looser, and close to the integer optimum
    assert integer_only * 0.95 <= account.epsilon() <= integer_only + 1e-9


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 1.1, 1000), (0.05, 2.0, 300)])
def test_the_prv_epsilon_is_opacus_own_and_tighter_than_rdp(q: float, sigma: float, steps: int) -> None:
    account = SampleAccount.new("fed", "h1", "prv", 1e-5, sigma, q)
    account.accountant.history.append((sigma, q, steps))
    opacus = PRVAccountant()
    opacus.history.append((sigma, q, steps))
    assert account.epsilon() == pytest.approx(opacus.get_epsilon(1e-5), rel=1e-6)
    assert account.epsilon() < to_epsilon([steps * subsampled_gaussian_rdp(q, sigma, a) for a in ORDERS], 1e-5)


def test_projection_composes_on_the_whole_history() -> None:
    a = SampleAccount.new("fed", "h1", "rdp", 1e-5, 1.0, 0.02)
    assert a.epsilon() == 0.0
    first = a.epsilon_after(100)
    a.accountant.history.append((1.0, 0.02, 100))
    assert a.epsilon() == pytest.approx(first)
    assert a.epsilon_after(100) > first  # never reset between rounds
    assert a.steps == 100


@pytest.mark.parametrize("kind", ["prv", "rdp"])
def test_planned_noise_meets_the_budget_and_no_less_noise_would(kind: str) -> None:
    sigma = plan_noise(3.0, 1e-5, 0.03, 600, kind)  # type: ignore[arg-type]
    a = SampleAccount.new("fed", "h1", kind, 1e-5, sigma, 0.03)  # type: ignore[arg-type]
    assert a.epsilon_after(600) <= 3.0
    b = SampleAccount.new("fed", "h1", kind, 1e-5, sigma * 0.95, 0.03)  # type: ignore[arg-type]
    assert b.epsilon_after(600) > 3.0


def test_state_round_trips_and_is_bound_to_its_federation_hospital_and_kind() -> None:
    a = SampleAccount.new("fed", "h1", "prv", 1e-5, 1.2, 0.02)
    a.accountant.history.append((1.2, 0.02, 250))
    a.rounds = 5
    back = SampleAccount.restore(a.state(), "fed", "h1", "prv")
    assert (back.epsilon(), back.rounds, back.noise) == (pytest.approx(a.epsilon()), 5, 1.2)
    for fed, hosp, kind in (("other", "h1", "prv"), ("fed", "h2", "prv"), ("fed", "h1", "rdp")):
        with pytest.raises(PrivacyError, match="not this hospital's in this federation"):
            SampleAccount.restore(a.state(), fed, hosp, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(("eps", "delta", "n", "match"), [(0, 1e-5, None, "target_epsilon"),
                                                         (math.inf, 1e-5, None, "target_epsilon"),
                                                         (1, 0, None, "delta"), (1, 1e-3, 1000, "below 1/N")])
def test_budgets_that_mean_nothing_are_refused(eps: float, delta: float, n: int | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_budget(eps, delta, n)


def test_zero_noise_is_refused() -> None:
    with pytest.raises(ConfigError, match="noise_multiplier"):
        SampleAccount.new("fed", "h1", "prv", 1e-5, 0.0, 0.02)


def test_the_closed_form_is_the_gaussian_without_subsampling() -> None:
    assert subsampled_gaussian_rdp(1.0, 2.0, 5) == pytest.approx(5 / (2 * 4.0))
