"""Shamir t-of-n secret sharing of 32-byte secrets over GF(2^521 - 1).

The field is larger than any secret, so a secret is one field element; any t shares reconstruct it
by Lagrange interpolation at 0, and t-1 shares are consistent with every secret (they say nothing).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

PRIME = 2**521 - 1  # a Mersenne prime
ELEMENT_BYTES = 66
SECRET_BYTES = 32


class ShamirError(ValueError):
    pass


@dataclass(frozen=True)
class Share:
    x: int  # 1..n: the holder's index; never 0 (that is the secret)
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(4, "big") + self.y.to_bytes(ELEMENT_BYTES, "big")

    @staticmethod
    def from_bytes(data: bytes) -> Share:
        if len(data) != 4 + ELEMENT_BYTES:
            raise ShamirError(f"a share is {4 + ELEMENT_BYTES} bytes, got {len(data)}")
        return Share(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"))


def split(secret: bytes, xs: list[int], threshold: int) -> dict[int, Share]:
    """Shares of `secret` for the holders `xs` (distinct, >= 1), any `threshold` of which reconstruct it."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(x < 1 for x in xs):
        raise ShamirError(f"share indices must be distinct and >= 1, got {xs}")
    if not 1 <= threshold <= len(xs):
        raise ShamirError(f"threshold must be in 1..{len(xs)}, got {threshold}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: Share(x, _evaluate(coeffs, x)) for x in xs}


def combine(shares: list[Share], threshold: int) -> bytes:
    """The secret from at least `threshold` shares (the first `threshold` distinct ones are used)."""
    distinct = {s.x: s for s in shares}
    if len(distinct) < threshold:
        raise ShamirError(f"need {threshold} shares to reconstruct, have {len(distinct)}")
    chosen = list(distinct.values())[:threshold]
    secret = 0
    for i, si in enumerate(chosen):
        num, den = 1, 1
        for j, sj in enumerate(chosen):
            if i != j:
                num = num * (-sj.x) % PRIME
                den = den * (si.x - sj.x) % PRIME
        secret = (secret + si.y * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ShamirError("shares do not reconstruct a valid secret (wrong or tampered shares)")
    return secret.to_bytes(SECRET_BYTES, "big")


def _evaluate(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc
