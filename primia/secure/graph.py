"""Who masks with whom: the complete graph (SecAgg) or a sparse k-regular graph (SecAgg+).

SecAgg+ (Bell et al., CCS 2020) connects each hospital to k = O(log n) others, so a hospital's work
(key agreements, masks, shares) grows with log n rather than n. The graph is a ring over a
permutation drawn from the round's public seed, each node linked to its k/2 successors and
predecessors (a Harary graph on a random labelling), so every party can recompute it.
"""

from __future__ import annotations

import math
import random


def auto_degree(n: int) -> int:
    """k for n parties: everyone below 8, else the smallest even k >= 2 * ceil(log2 n) (capped at n-1)."""
    if n <= 8:
        return n - 1
    k = 2 * math.ceil(math.log2(n))
    return min(n - 1, k + (k % 2))


def neighbours(parties: list[str], degree: int, seed: int) -> dict[str, frozenset[str]]:
    """Each party's neighbours (symmetric, no self loops) in a degree-regular graph."""
    n = len(parties)
    if len(set(parties)) != n:
        raise ValueError(f"party names must be distinct, got {parties}")
    if degree >= n - 1:
        return {p: frozenset(q for q in parties if q != p) for p in parties}
    if degree < 2 or degree % 2:
        raise ValueError(f"SecAgg+ degree must be even and >= 2 (or n-1), got {degree}")
    order = sorted(parties)
    random.Random(seed).shuffle(order)
    half = degree // 2
    return {p: frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d) for i, p in enumerate(order)}


def threshold(group: int, fraction: float) -> int:
    """Shares needed to reconstruct within a neighbourhood of `group` holders (neighbours and self)."""
    if not 0 < fraction < 1:
        raise ValueError(f"threshold fraction must be in (0, 1), got {fraction}")
    return max(2, min(group, math.floor(fraction * group) + 1))
