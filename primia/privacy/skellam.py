"""The distributed Skellam mechanism (Agarwal, Kairouz, Liu, NeurIPS 2021) for client-level DP-FedAvg.

Each hospital clips its update to L2 norm C, scales it by gamma, rounds it to integers (conditional
randomized rounding: unbiased, and the rounded norm stays within a bound that holds with certainty
because a rounding that exceeds it is drawn again) and adds its share of Skellam noise:
Sk(v/2, v/2) = Poisson(v/2) - Poisson(v/2), variance v. Skellam is closed under summation, so the
masked sum over the round's hospitals carries Skellam noise of the summed variance, exactly, in the
integer ring of secure aggregation; no party sees a sum with less noise than that.

Trust: every hospital adds the variance share mu / m, where m is the number of honest contributors the
federation assumes will always be in a sum (the quorum less the colluders). Any sum the protocol
unmasks has at least m honest hospitals in it, so it carries at least the central variance mu whether
the others dropped out, or colluded with the coordinator and subtracted their own noise.

Accounting (RDP, integer alpha > 1, integer sensitivities D1, D2 after rounding, central variance mu;
Agarwal et al. 2021, Theorem 3.5 in the variance parametrisation):

    eps(alpha) <= alpha D2^2 / (2 mu) + min( ((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2),  3 D1 / (2 mu) )

composed over rounds (no amplification by the coordinator's sampling: it is not trusted to sample at
random) and converted to (epsilon, delta) as Opacus' RDP accountant does. Quantization enters as the
inflated D2 (and D1 <= min(sqrt(d) D2, D2^2) for integer vectors); modular clipping - the ring
wrapping a noisy coordinate - is bounded by `wrap_probability`, a Bernstein tail with a union bound.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from opacus.accountants.analysis.rdp import get_privacy_spent

from primia.errors import ConfigError, PrivacyError

ORDERS: tuple[int, ...] = (*range(2, 128), 128, 192, 256, 384, 512, 1024)
BETA = math.exp(-0.5)  # chance that a randomized rounding is drawn again (the bound's slack)
MAX_WRAP = 1e-6  # a plan whose noise could wrap the ring more often than this is refused
POISSON_MAX = 1e12  # largest mean drawn in one piece
SCALE_MAX = 2.0**19  # scale * clip: rounding then adds < 1e-5 to D2 up to 10 M values, and noise stays exact


def rdp(alpha: int, l1: float, l2: float, variance: float) -> float:
    """The Skellam mechanism's RDP at integer order `alpha` (sensitivities in integer units)."""
    if alpha < 2 or variance <= 0:
        raise ValueError(f"need an integer order >= 2 and a positive variance, got {alpha}, {variance}")
    return (alpha * l2**2 / (2 * variance)
            + min(((2 * alpha - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance)))


def epsilon(rounds: int, l1: float, l2: float, variance: float, delta: float) -> float:
    """(epsilon at delta) after `rounds` releases of the same Skellam sum."""
    if rounds <= 0:
        return 0.0
    curve = [rounds * rdp(a, l1, l2, variance) for a in ORDERS]
    with warnings.catch_warnings():  # "optimal order is the smallest/largest alpha": a valid, looser bound
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=curve, delta=delta)
    return float(eps)


def rounded_l2_bound(norm: float, dim: int, beta: float = BETA) -> float:
    """L2 norm bound of a conditionally rounded vector whose norm was `norm` (Kairouz, Liu, Steinke 2021,
    Theorem 23): rounding moves each coordinate by < 1, and with the conditional draw the square norm
    stays below norm^2 + d/4 + sqrt(2 ln(1/beta)) (norm + sqrt(d)/2)."""
    tight = norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
    return min(norm + math.sqrt(dim), math.sqrt(tight))


@dataclass(frozen=True)
class Quantizer:
    """Clip to `clip`, scale by `scale`, round conditionally: integer vectors of norm <= `l2`."""

    dim: int
    clip: float
    scale: float

    @property
    def l2(self) -> float:
        return rounded_l2_bound(self.scale * self.clip, self.dim)

    @property
    def l1(self) -> float:  # an integer vector's L1 norm is at most its squared L2 norm, and sqrt(d) times it
        return min(math.sqrt(self.dim) * self.l2, self.l2**2)

    def clip_vector(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """x scaled to L2 norm at most `clip`; True when it had to be scaled down."""
        norm = float(np.linalg.norm(x))
        if not math.isfinite(norm):
            raise PrivacyError("the update has non-finite values (training diverged): refusing to send it")
        if norm <= self.clip:
            return x, False
        return x * (self.clip / norm), True

    def quantize(self, x: np.ndarray, rng: np.random.Generator, max_draws: int = 100) -> np.ndarray:
        """Unbiased randomized rounding of scale * x, drawn again until its norm is within `l2`."""
        y = np.asarray(x, dtype=np.float64) * self.scale
        floor = np.floor(y)
        frac = y - floor
        bound_sq = self.l2**2
        for _ in range(max_draws):
            out = floor + (rng.random(y.shape) < frac)
            if float(np.dot(out, out)) <= bound_sq:
                return out.astype(np.int64)
        raise PrivacyError(f"randomized rounding exceeded its norm bound {max_draws} times (chance below "
                           f"{BETA ** max_draws:.1e}): refusing to send an update outside the accounted bound")


def skellam_noise(shape: int | tuple[int, ...], variance: float, rng: np.random.Generator) -> np.ndarray:
    """Symmetric Skellam noise of the given variance per coordinate (integers)."""
    if not (math.isfinite(variance) and variance > 0):
        raise PrivacyError(f"Skellam noise needs a positive variance, got {variance}: noise 0 is no privacy")
    # numpy's Poisson sampler loses accuracy above about 1e13 (measured: variance 0.85x at 8e14); a sum of
    # independent Poissons is Poisson of the summed mean, so a large mean is drawn in exact pieces
    pieces = max(1, math.ceil(variance / 2 / POISSON_MAX))
    lam = variance / 2 / pieces
    out = np.zeros(shape, dtype=np.int64)
    for _ in range(pieces):
        out += rng.poisson(lam, shape).astype(np.int64) - rng.poisson(lam, shape).astype(np.int64)
    return out


@dataclass(frozen=True)
class SkellamPlan:
    """A federation's client-level mechanism: quantizer, central variance and honest contributors."""

    quantizer: Quantizer
    variance: float  # central: what every unmasked sum carries at least
    honest: int  # contributors every sum is assumed to hold (quorum - colluders)

    @property
    def share_variance(self) -> float:
        return self.variance / self.honest

    @property
    def noise_multiplier(self) -> float:
        """Central noise standard deviation relative to the L2 sensitivity (the Gaussian analogue)."""
        return math.sqrt(self.variance) / self.quantizer.l2

    def epsilon(self, rounds: int, delta: float) -> float:
        return epsilon(rounds, self.quantizer.l1, self.quantizer.l2, self.variance, delta)

    def noise_share(self, rng: np.random.Generator) -> np.ndarray:
        return skellam_noise(self.quantizer.dim, self.share_variance, rng)

    def wrap_probability(self, parties: int, bits: int) -> float:
        """Upper bound on the chance that any coordinate of a sum of `parties` contributions leaves the
        signed ring (-2^(bits-1), 2^(bits-1)): signal at most parties * l2, noise a Bernstein tail."""
        room = 2.0 ** (bits - 1) - parties * self.quantizer.l2
        if room <= 0:
            return 1.0
        var = self.share_variance * parties
        tail = 2 * self.quantizer.dim * math.exp(-room**2 / (2 * (var + room / 3)))
        return min(1.0, tail)


def plan(clip: float, dim: int, parties: int, honest: int, bits: int, target_epsilon: float, delta: float,
         rounds: int, noise_multiplier: float | None = None) -> SkellamPlan:
    """The scale that leaves the ring a margin over `parties` contributions, and the central variance:
    the given noise multiplier, or the smallest one whose `rounds` releases stay within the budget."""
    if honest < 1 or parties < honest:
        raise ConfigError(f"client-level DP needs 1 <= honest contributors ({honest}) <= parties ({parties})")
    fixed = noise_multiplier
    if fixed is not None and not (math.isfinite(fixed) and fixed > 0):
        raise ConfigError(f"privacy.noise_multiplier must be positive, got {fixed} (noise 0 is no privacy)")
    tail = math.sqrt(2 * math.log(2 * dim / MAX_WRAP))  # noise standard deviations the ring must hold
    z = fixed or 1.0
    for _ in range(2):  # the scale leaves room for the noise, the noise depends (slightly) on the scale
        scale = 2.0 ** (bits - 1) / (1.05 * clip * (parties + tail * z * math.sqrt(parties / honest)))
        scale = min(scale, SCALE_MAX / clip)
        q = Quantizer(dim, clip, scale)
        if q.l2 > 1.01 * scale * clip:
            raise ConfigError(f"the {bits}-bit ring cannot quantize {dim} values finely enough (rounding would add "
                              f"{q.l2 / (scale * clip) - 1:.0%} to the sensitivity): use secure_aggregation.bits 64")
        z = fixed or plan_multiplier(q, rounds, delta, target_epsilon)
    result = SkellamPlan(q, (z * q.l2) ** 2, honest)
    wrap = result.wrap_probability(parties, bits)
    if wrap > MAX_WRAP:
        raise ConfigError(f"with noise multiplier {z:.3g} the {bits}-bit ring may wrap a coordinate "
                          f"(chance up to {wrap:.1e}): use secure_aggregation.bits 64")
    return result


def plan_multiplier(q: Quantizer, rounds: int, delta: float, target_epsilon: float) -> float:
    """Bisection on the noise multiplier z (central variance (z * l2)^2): epsilon falls as z grows."""
    def eps(z: float) -> float:
        return epsilon(rounds, q.l1, q.l2, (z * q.l2) ** 2, delta)

    lo, hi = 1e-3, 1.0
    while eps(hi) > target_epsilon:
        hi *= 2
        if hi > 1e4:
            raise ConfigError(f"no noise multiplier reaches epsilon {target_epsilon} in {rounds} rounds")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if eps(mid) <= target_epsilon else (mid, hi)
    return hi
