"""The two parties' protocol operations on additive shares mod 2^64 (and XOR shares of words).

Each party runs the same code on its own shares (`role` 0 or 1); the dealer runs it too, on meta tensors,
to hand out the correlated randomness in the order the parties use it. Every value a party receives is
its peer's share of something masked by fresh uniform randomness from the dealer (Beaver's E and F, an AND
gate's d and e, a bit XOR a uniform bit), so what it sees is uniform whatever the image and the weights.

Truncation and signs are exact: the carries of the sum of the two shares they need come out of a sparse
prefix tree on XOR shares (adder.py: binary AND triples, 7 rounds), so a product never wraps into a wrong
value, unlike local truncation, which fails with probability about |x| / 2^63 per element.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from primia.smpc import adder
from primia.smpc.adder import OFFSET_BIT
from primia.smpc.dealer import Bilinear, Source
from primia.smpc.ring import BITS, FRAC_BITS, bit, shift_right_logical


class Channel(Protocol):
    def exchange(self, mine: list[torch.Tensor]) -> list[torch.Tensor]:
        """Send my tensors, receive the peer's tensors of the same shapes (one round)."""
        ...


class Engine:
    def __init__(self, role: int | str, channel: Channel, source: Source, frac_bits: int = FRAC_BITS,
                 trace: bool = False) -> None:
        self.role, self.channel, self.source, self.f = role, channel, source, frac_bits
        self.rounds = 0
        self.opened: list[torch.Tensor] | None = [] if trace else None  # what this party learned (tests)

    @property
    def dealer(self) -> bool:
        """The dealer's run: only the material requests matter. Its branches below ask for the same pieces in
        the same order as the parties' code, without the elementwise work (on meta tensors that work goes
        through Python reference kernels: 14 s of a 20 s ResNet-18 run at 64x64)."""
        return self.role == "dealer"

    @property
    def leader(self) -> bool:
        """The party that adds public constants (party 0; the dealer plays it, on shapes)."""
        return self.role != 1

    # ---------------------------------------------------------------- opening masked values
    def _open(self, mine: list[torch.Tensor], combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
              ) -> list[torch.Tensor]:
        self.rounds += 1
        theirs = self.channel.exchange(mine)
        if len(theirs) != len(mine) or any(t.shape != m.shape or t.dtype != m.dtype for t, m in zip(theirs, mine,
                                                                                                    strict=True)):
            raise ValueError("peer sent tensors of other shapes than this step expects")
        out = [combine(m, t) for m, t in zip(mine, theirs, strict=True)]
        if self.opened is not None:
            self.opened.extend(out)
        return out

    def open(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        return self._open(list(xs), torch.add)

    def open_xor(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        return self._open(list(xs), torch.bitwise_xor)

    # ---------------------------------------------------------------- arithmetic
    def public(self, c: torch.Tensor) -> torch.Tensor:
        """This party's share of a public value."""
        return c.clone() if self.leader else torch.zeros_like(c)

    def bilinear(self, f: Bilinear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Shares of f(x, y) for shared x and y (Beaver): one round, no truncation."""
        a, b, c = self.source.triple(f, x.shape, y.shape)
        if self.dealer:
            return c
        e, g = self.open(x - a, y - b)
        # f(e, b) + f(a, g), and the leader's f(e, g) folded into its first term by linearity: two ops, not three
        return c + f(e, b + g if self.leader else b) + f(a, g)

    def mul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bilinear(torch.mul, x, y)

    # ---------------------------------------------------------------- words under XOR sharing
    def and_(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        u, v, w = self.source.and_triple(x.shape)
        if self.dealer:
            return w
        d, e = self.open_xor(x ^ u, y ^ v)
        z = w ^ (d & v) ^ (e & u)
        return z ^ (d & e) if self.leader else z

    def b2a(self, bits: torch.Tensor) -> torch.Tensor:
        """Additive shares of bits held as XOR shares (0/1 per element): one round with the dealer's bits."""
        r, ra = self.source.dabits(bits.shape)
        if self.dealer:
            return ra
        c = self.open_bits(bits ^ r)
        return self.public(c) + (1 - 2 * c) * ra

    def open_bits(self, bits: torch.Tensor) -> torch.Tensor:
        """Open XOR-shared 0/1 values packed 64 to a word: each word sent is then uniform, like every other
        message, and eight bytes carry 64 bits instead of one."""
        flat = bits.reshape(-1)
        pad = (-flat.numel()) % BITS
        lanes = torch.arange(BITS, device=bits.device)
        words = (torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, BITS) << lanes).sum(-1)
        (opened,) = self.open_xor(words)
        return ((opened.unsqueeze(-1) >> lanes) & 1).reshape(-1)[:flat.numel()].reshape(bits.shape)

    # ---------------------------------------------------------------- exact truncation and signs
    def _offset(self, x: torch.Tensor) -> torch.Tensor:
        return x + (1 << OFFSET_BIT) if self.leader else x

    def truncate_sign(self, x: torch.Tensor, shift: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Shares of floor(x / 2^shift) (default: the fractional bits) and of [x >= 0], exactly."""
        f = self.f if shift is None else shift
        if self.dealer:
            for n in adder.gate_sizes(x.numel(), f):
                self.source.and_triple(torch.Size((n,)))
            self.b2a(x if f == 0 else torch.empty((3, *x.shape), dtype=x.dtype, device=x.device))
            return x, x
        own = self._offset(x)
        low, sign_carry, wrap = adder.carries(own, f, int(self.role), self.and_)
        sign = bit(own, OFFSET_BIT) ^ sign_carry  # bit 62 of the sum: x >= 0
        if f == 0:
            return x, self.b2a(sign)
        low_a, wrap_a, nonneg = self.b2a(torch.stack([low, wrap, sign]))
        # floor((a0 + a1) / 2^f) = (a0 >> f) + (a1 >> f) + carry out of the low f bits - wrap * 2^(64 - f)
        t = shift_right_logical(own, f) + low_a - wrap_a * (1 << (BITS - f))
        return (t - (1 << (OFFSET_BIT - f)) if self.leader else t), nonneg

    def truncate(self, x: torch.Tensor) -> torch.Tensor:
        return self.truncate_sign(x)[0]

    def nonneg(self, x: torch.Tensor) -> torch.Tensor:
        return self.truncate_sign(x, 0)[1]

    def relu_truncate(self, x: torch.Tensor) -> torch.Tensor:
        """max(0, floor(x / 2^f)): a product's truncation and the ReLU after it from one adder."""
        t, s = self.truncate_sign(x)
        return self.mul(t, s)

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        return self.mul(x, self.nonneg(x))

    def maximum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = x - y
        return y + self.mul(d, self.nonneg(d))
