"""Fixed-point encoding of real vectors in the ring Z_2^bits, with the overflow bound checked up front.

A hospital clips each coordinate of its update to [-clip, clip], multiplies by its sample count n_i
(so the ring sum is the numerator of sample-weighted FedAvg) and scales by 2^frac_bits. The sum over
H hospitals stays below half the modulus when H * n_max * clip * 2^frac_bits < 2^(bits-1), so the
signed sum is recovered exactly; `frac_bits_for` picks the largest frac_bits that keeps that true.

Error bound of the decoded weighted mean, per coordinate (no clipping): each hospital's rounding is
at most 2^-(frac_bits+1), so |mean - exact| <= H * 2^-(frac_bits+1) / sum(n_i) <= 2^-(frac_bits+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from primia.errors import ConfigError
from primia.secure.prg import ring_dtype

MIN_FRAC_BITS = 8  # below this the quantization error (>= 2^-9 per coordinate) would swamp an update


def frac_bits_for(bits: int, max_hospitals: int, max_examples: int, clip: float) -> int:
    """Largest frac_bits with max_hospitals * max_examples * clip * 2^frac_bits < 2^(bits-1)."""
    ring_dtype(bits)
    if max_hospitals < 1 or max_examples < 1 or not clip > 0:
        raise ConfigError(f"secure_aggregation: max_hospitals, max_examples and clip must be positive, got "
                          f"{max_hospitals}, {max_examples}, {clip}")
    worst = max_hospitals * max_examples * clip
    frac = math.floor((bits - 1) - math.log2(worst)) - 1  # one bit of margin for rounding up
    frac = min(frac, 52 - math.ceil(math.log2(max(max_examples * clip, 1.0))))  # float64 stays exact
    if frac < MIN_FRAC_BITS:
        raise ConfigError(
            f"secure_aggregation: {max_hospitals} hospitals x {max_examples} examples x clip {clip} leaves only "
            f"{frac} fractional bits in a {bits}-bit ring (need >= {MIN_FRAC_BITS}): use bits: 64, or lower "
            f"max_examples, max_hospitals or clip")
    return frac


@dataclass(frozen=True)
class FixedPoint:
    bits: int
    frac_bits: int
    clip: float

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return ring_dtype(self.bits)

    @property
    def bound(self) -> float:
        """Largest error of a decoded weighted mean per coordinate (unclipped inputs)."""
        return 2.0 ** -(self.frac_bits + 1)

    def encode(self, values: np.ndarray, weight: int) -> tuple[np.ndarray, int]:
        """weight * clip(values) in fixed point, as ring elements; also how many coordinates were clipped."""
        x = np.asarray(values, dtype=np.float64)
        clipped = int(np.count_nonzero(np.abs(x) > self.clip))
        scaled = np.rint(np.clip(x, -self.clip, self.clip) * (weight * 2.0**self.frac_bits))
        return _to_ring(scaled.astype(np.int64), self.dtype), clipped

    def encode_int(self, values: np.ndarray) -> np.ndarray:
        """Integers as they are (counts: n_i, confusion matrices), two's complement in the ring."""
        return _to_ring(np.asarray(values, dtype=np.int64), self.dtype)

    def decode(self, ring: np.ndarray, divisor: float = 1.0) -> np.ndarray:
        return signed(ring) / (2.0**self.frac_bits * divisor)


def _to_ring(values: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    return values.astype(dtype)  # C cast: keeps the low bits, i.e. two's complement modulo 2^bits


def signed_int(ring: np.ndarray) -> np.ndarray:
    """Ring elements as signed integers (the upper half of the ring is negative)."""
    return ring.view(np.int32 if ring.dtype == np.uint32 else np.int64).astype(np.int64)


def signed(ring: np.ndarray) -> np.ndarray:
    """The same as floats, for decoding."""
    return signed_int(ring).astype(np.float64)
