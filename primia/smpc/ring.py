"""Fixed-point numbers in Z_2^64: a real x is the int64 round(x * 2^FRAC_BITS), read as two's complement."""

from __future__ import annotations

import torch

FRAC_BITS = 16
BITS = 64


def encode(x: torch.Tensor, frac_bits: int = FRAC_BITS) -> torch.Tensor:
    """Reals to fixed point; values must fit in 63 - frac_bits integer bits (float64 rounding is exact there)."""
    scaled = x.to(torch.float64) * float(1 << frac_bits)
    if scaled.numel() and float(scaled.abs().max()) >= 2.0**62:
        # no value in the message: it may be told to the other parties as the session's reason
        raise ValueError(f"fixed point: a value does not fit |x| < 2^{62 - frac_bits}")
    return torch.round(scaled).to(torch.int64)


def decode(x: torch.Tensor, frac_bits: int = FRAC_BITS) -> torch.Tensor:
    return x.to(torch.float64) / float(1 << frac_bits)


def shift_right_logical(x: torch.Tensor, k: int) -> torch.Tensor:
    """x >> k on the unsigned reading of the bits (torch's >> on int64 is arithmetic)."""
    if k == 0:
        return x
    return (x >> k) & ((1 << (BITS - k)) - 1)


def bit(x: torch.Tensor, i: int) -> torch.Tensor:
    """Bit i of each word, as 0/1 int64."""
    return (x >> i) & 1
