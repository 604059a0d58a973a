"""The few carries truncation and signs need, from a sparse prefix tree on XOR shares (about half the AND
gates of a full 64-bit Kogge-Stone adder, in the same 7 rounds).

For the sum of the parties' addends (each holds its own in the clear) we need three carries only:
- the carry out of the low f bits (the exact floor of a truncation),
- the carry into bit 62 (with the offset, bit 62 of the sum is the sign),
- the carry out of bit 63 (the wrap). The offset sum is below 2^63, so its bit 63 is 0 and the carry into
  bit 63 equals the XOR of the two bits 63: the wrap is then g63 ^ p63, with no gate at all.

Each wanted carry is the "generate" of a block of 2^L bits that ends at the top of a lane, after shifting
the bits below it to the lane's top (lanes of 64 bits for the sign, of 16 for f = 16: four elements a word).
An up-sweep (Brent-Kung) halves the useful positions every level, so after each level two words' useful bits
are packed into one: the next level's AND gates (and their bytes on the wire) halve too.

The packing keeps distances: after level j the useful positions of an element at offset o in a word are
those whose residue mod 2^j is 2^j - 1 - o (the upper half of each 2^j-block); a second word shifted right
by 2^(j-1) fills the lower halves, and combining partners stay 2^(j-1) apart at the next level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from primia.smpc.ring import BITS, bit, shift_right_logical

OFFSET_BIT = 62  # |x| < 2^62: x + 2^62 is a non-negative 63-bit number, whose bit 62 is x's sign
And = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # XOR shares of x & y, one round


def _upper(j: int) -> int:
    """The positions whose residue mod 2^j is in the upper half, as an int64 mask."""
    half = 1 << (j - 1)
    block = ((1 << half) - 1) << half
    word = 0
    for start in range(0, BITS, 1 << j):
        word |= block << start
    return word - (1 << BITS) if word >= 1 << (BITS - 1) else word


def lane_bits(f: int) -> int:
    """The lane a carry out of f bits is computed in: the least power of two >= f (at least 2)."""
    return max(2, 1 << (f - 1).bit_length())


@dataclass
class _Tree:
    """One up-sweep: elements in lanes of 2^levels bits, their wanted block at each lane's top."""

    g: torch.Tensor  # words
    p: torch.Tensor
    levels: int
    index: torch.Tensor  # [words, lanes, offsets]: the element each lane offset holds

    @classmethod
    def of(cls, g: torch.Tensor, p: torch.Tensor, bits: int) -> _Tree:
        """Elements' low `bits` bits (of generate and propagate) moved to the top of their lanes and packed."""
        width = lane_bits(bits)
        lanes, levels = BITS // width, width.bit_length() - 1
        n = g.numel()
        words = -(-n // (lanes << (levels - 1))) << (levels - 1)  # a multiple of 2^(levels-1): every pack pairs
        pad = words * lanes - n
        keep = (1 << bits) - 1 if bits < BITS else -1
        packed = []
        for x in (g, p):
            low = torch.cat([(x & keep) << (width - bits), x.new_zeros(pad)]).reshape(lanes, words)
            word = low[0]
            for b in range(1, lanes):
                word = word | (low[b] << (b * width))
            packed.append(word)
        index = torch.arange(words * lanes).reshape(lanes, words).T.reshape(words, lanes, 1)
        return cls(packed[0], packed[1], levels, index)

    def ask(self, j: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The AND gates of level j: p & (g << s) and, below the last level, p & (p << s)."""
        s = 1 << (j - 1)
        if j < self.levels:
            return [self.p, self.p], [self.g << s, self.p << s]
        return [self.p], [self.g << s]

    def take(self, j: int, z: list[torch.Tensor]) -> None:
        self.g = self.g ^ z[0]
        if j == self.levels:
            return
        self.p = z[1]
        h, mask, s = self.g.numel() // 2, _upper(j), 1 << (j - 1)
        self.g, self.p = ((x[:h] & mask) | shift_right_logical(x[h:] & mask, s) for x in (self.g, self.p))
        self.index = torch.cat([self.index[:h], self.index[h:]], dim=2)

    def result(self, n: int) -> torch.Tensor:
        """0/1 per element: the block's generate, read at its lane's top (offset o sits o below it)."""
        width = 1 << self.levels
        _, lanes, offsets = self.index.shape
        pos = torch.tensor([[b * width + width - 1 - o for o in range(offsets)] for b in range(lanes)])
        bits = (self.g[:, None, None] >> pos) & 1
        out = torch.zeros(self.index.numel(), dtype=torch.int64)
        out[self.index.reshape(-1)] = bits.reshape(-1)
        return out[:n]


def _run(trees: list[_Tree], and_: And) -> None:
    """All trees' levels in shared rounds: one AND call per level."""
    for j in range(1, max(t.levels for t in trees) + 1):
        live = [t for t in trees if j <= t.levels]
        asks = [t.ask(j) for t in live]
        xs = [x for a in asks for x in a[0]]
        z = and_(torch.cat(xs), torch.cat([y for a in asks for y in a[1]]))
        parts = iter(torch.split(z, [x.numel() for x in xs]))
        for t, a in zip(live, asks, strict=True):
            t.take(j, [next(parts) for _ in a[0]])


def carries(addend: torch.Tensor, f: int, role: int, and_: And) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """XOR shares (0/1, the addend's shape) of the carry out of the low f bits, the carry into bit 62 and the
    carry out of bit 63 of (party 0's addend + party 1's addend), which must be below 2^63 (see above)."""
    flat = addend.reshape(-1)
    zero = torch.zeros_like(flat)
    g = and_(*((flat, zero) if role == 0 else (zero, flat)))  # generate: a & b; propagate: each its own addend
    p = flat
    trees = [_Tree.of(g, p, OFFSET_BIT)] + ([_Tree.of(g, p, f)] if f else [])
    _run(trees, and_)
    n = flat.numel()
    sign_carry = trees[0].result(n)
    low = trees[1].result(n) if f else torch.zeros_like(flat)
    wrap = bit(g, BITS - 1) ^ bit(p, BITS - 1)
    return tuple(x.reshape(addend.shape) for x in (low, sign_carry, wrap))  # type: ignore[return-value]


def gate_sizes(n: int, f: int) -> list[int]:
    """The AND gates `carries` asks for, level by level (the dealer's material, in the parties' order)."""
    sizes = [n]
    trees = []
    for bits in [OFFSET_BIT] + ([f] if f else []):
        width = lane_bits(bits)
        lanes, levels = BITS // width, width.bit_length() - 1
        trees.append((-(-n // (lanes << (levels - 1))) << (levels - 1), levels))
    for j in range(1, max(levels for _, levels in trees) + 1):
        sizes.append(sum((words >> (j - 1)) * (2 if j < levels else 1) for words, levels in trees if j <= levels))
    return sizes
