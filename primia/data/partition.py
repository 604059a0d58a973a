"""Split samples between hospitals (and train/test) by index.

Every partitioner returns a list of sorted int64 index arrays, one per part, and raises a
`DataError` naming the empty part rather than returning one.
"""

from __future__ import annotations

import numpy as np

from primia.errors import DataError


def _check(num_parts: int, n: int, unit: str = "samples") -> None:
    if num_parts < 1:
        raise DataError(f"number of partitions must be at least 1, got {num_parts}")
    if n < num_parts:
        raise DataError(f"cannot split {n} {unit} into {num_parts} non-empty partitions")


def _non_empty(parts: list[np.ndarray], what: str) -> list[np.ndarray]:
    for i, p in enumerate(parts):
        if len(p) == 0:
            raise DataError(f"{what}: partition {i + 1} of {len(parts)} is empty")
    return [np.sort(p).astype(np.int64) for p in parts]


def iid_partition(n: int, num_parts: int, seed: int) -> list[np.ndarray]:
    """Shuffle and cut into near-equal parts."""
    _check(num_parts, n)
    perm = np.random.default_rng(seed).permutation(n)
    return _non_empty(list(np.array_split(perm, num_parts)), "IID partition")


def dirichlet_partition(labels: np.ndarray, num_parts: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew: each class is spread over the parts with proportions drawn from Dir(alpha).

    Small alpha gives each hospital few classes; large alpha tends to IID.
    """
    if alpha <= 0:
        raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
    _check(num_parts, len(labels))
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_parts)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet([alpha] * num_parts)) * len(idx)).astype(int)[:-1]
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.extend(chunk.tolist())
    return _non_empty([np.asarray(p, dtype=np.int64) for p in parts], f"Dirichlet partition (alpha={alpha})")


def grouped_partition(
    groups: np.ndarray, num_parts: int, seed: int, labels: np.ndarray | None = None, alpha: float | None = None
) -> list[np.ndarray]:
    """Whole groups to parts: a group never spans two parts.

    Without `alpha`, groups are dealt largest first to the part with the fewest samples, which
    keeps sizes balanced. With `alpha` (and labels), each group goes to a part drawn from that
    group's majority-class Dirichlet proportions: label skew that still respects groups.
    """
    uniq, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    _check(num_parts, len(uniq), "groups")
    rng = np.random.default_rng(seed)
    sizes = np.bincount(inverse)
    order = rng.permutation(len(uniq))
    owner = np.empty(len(uniq), dtype=np.int64)
    if alpha is None:
        load = np.zeros(num_parts, dtype=np.int64)
        for g in order[np.argsort(-sizes[order], kind="stable")]:
            owner[g] = int(np.argmin(load))
            load[owner[g]] += sizes[g]
    else:
        if labels is None or alpha <= 0:
            raise DataError("grouped Dirichlet partition needs labels and alpha > 0")
        majority = np.array([np.bincount(labels[inverse == g]).argmax() for g in range(len(uniq))])
        props = {c: rng.dirichlet([alpha] * num_parts) for c in np.unique(majority)}
        for g in order:
            owner[g] = rng.choice(num_parts, p=props[majority[g]])
    parts = [np.flatnonzero(owner[inverse] == k) for k in range(num_parts)]
    return _non_empty(parts, "grouped partition")


def group_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held-out) so that about `fraction` of samples are held out
    and no group is on both sides."""
    if not 0 < fraction < 1:
        raise DataError(f"held-out fraction must be between 0 and 1, got {fraction}")
    uniq, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if len(uniq) < 2:
        raise DataError(f"cannot hold out a fraction of {len(uniq)} group(s): need at least 2")
    order = np.random.default_rng(seed).permutation(len(uniq))
    sizes = np.bincount(inverse)
    target = fraction * len(groups)
    held: set[int] = set()
    total = 0
    for g in order:
        if total >= target:
            break
        held.add(int(g))
        total += sizes[g]
    if len(held) == len(uniq):
        held.discard(int(order[-1]))
    mask = np.isin(inverse, list(held))
    return np.flatnonzero(~mask), np.flatnonzero(mask)
