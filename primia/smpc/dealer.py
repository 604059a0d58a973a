"""Correlated randomness: what the dealer hands out, and how each party draws its part.

Every piece comes from two seeds. Party 0 expands its seed to all of its shares, so its part costs the
dealer 32 bytes. Party 1 expands its seed to the uniformly random parts of its shares; the one part
that must fit the others (the product share of a triple, the arithmetic share of a bit) comes from the
dealer as a correction tensor. The dealer runs the same program as the parties on shapes only (meta
tensors), so it asks for the same pieces in the same order, and it never sees a share of a real value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from primia.smpc.prg import Stream

Bilinear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mul, matmul, conv2d with fixed settings
META = torch.device("meta")


def out_shape(f: Bilinear, a: torch.Size, b: torch.Size) -> torch.Size:
    return f(torch.empty(a, dtype=torch.int64, device=META), torch.empty(b, dtype=torch.int64, device=META)).shape


class Source(Protocol):
    """A party's supply of correlated randomness, in the order the program asks for it."""

    def triple(self, f: Bilinear, a: torch.Size, b: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shares of A, B and C = f(A, B) for uniform A, B."""
        ...

    def and_triple(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """XOR-shares of words u, v and u & v."""
        ...

    def dabits(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform bit r as an XOR-share (0/1) and as an additive share mod 2^64."""
        ...


class SeededSource:
    """Party 0: everything from its seed."""

    def __init__(self, stream: Stream) -> None:
        self.s = stream

    def triple(self, f: Bilinear, a: torch.Size, b: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.s.int64(a), self.s.int64(b), self.s.int64(out_shape(f, a, b))

    def and_triple(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.s.int64(shape), self.s.int64(shape), self.s.int64(shape)

    def dabits(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        return self.s.bits(shape), self.s.int64(shape)


class CorrectedSource:
    """Party 1: the uniform parts from its seed, the fitting parts from the dealer's corrections."""

    def __init__(self, stream: Stream, corrections: Iterator[torch.Tensor]) -> None:
        self.s, self.c = stream, corrections

    def _next(self, shape: torch.Size) -> torch.Tensor:
        got = next(self.c)
        if got.shape != shape or got.dtype != torch.int64:
            raise ValueError(f"dealer material out of step: expected int64 {tuple(shape)}, got {got.dtype} "
                             f"{tuple(got.shape)}")
        return got

    def triple(self, f: Bilinear, a: torch.Size, b: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.s.int64(a), self.s.int64(b), self._next(out_shape(f, a, b))

    def and_triple(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.s.int64(shape), self.s.int64(shape), self._next(shape)

    def dabits(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        return self.s.bits(shape), self._next(shape)


@dataclass
class DealerSource:
    """The dealer: expands both seeds, computes what party 1's corrections must be, and gives the program
    meta tensors in place of shares (it holds none)."""

    s0: Stream
    s1: Stream
    emit: Callable[[torch.Tensor], None]  # party 1's next correction
    bytes_out: int = field(default=0)

    def _send(self, t: torch.Tensor) -> None:
        self.bytes_out += t.numel() * 8
        self.emit(t)

    def triple(self, f: Bilinear, a: torch.Size, b: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a0, b0, c0 = self.s0.int64(a), self.s0.int64(b), self.s0.int64(out_shape(f, a, b))
        a1, b1 = self.s1.int64(a), self.s1.int64(b)
        self._send(f(a0 + a1, b0 + b1) - c0)
        return _meta(a), _meta(b), _meta(c0.shape)

    def and_triple(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u0, v0, w0 = self.s0.int64(shape), self.s0.int64(shape), self.s0.int64(shape)
        u1, v1 = self.s1.int64(shape), self.s1.int64(shape)
        self._send(((u0 ^ u1) & (v0 ^ v1)) ^ w0)
        return _meta(shape), _meta(shape), _meta(shape)

    def dabits(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        r0, ra0 = self.s0.bits(shape), self.s0.int64(shape)
        r1 = self.s1.bits(shape)
        self._send((r0 ^ r1) - ra0)
        return _meta(shape), _meta(shape)


def _meta(shape: torch.Size) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.int64, device=META)
