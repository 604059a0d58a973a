"""Image intensity statistics for input normalisation (PriMIA's federated mean and std).

Each hospital summarises its training images as (mean of the per-image means, mean of the per-image
mean squares) with its image count as weight; the weighted mean of those, which secure aggregation
computes without revealing any hospital's pair, gives the pooled pixel mean and standard deviation
exactly (every image has the same size after preprocessing). PriMIA averaged the nodes' statistics
unweighted; here a hospital with more images counts more, as in a pooled computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from primia.errors import DataError

STATS_KEY = "input_stats"  # a two-element "tensor": [E[x], E[x^2]] over pixels


def stats_start() -> dict[str, np.ndarray]:
    """What the normalisation pass's "updates" are deltas from: zeros (the moments are sent as they are)."""
    return {STATS_KEY: np.zeros(2)}


def local_moments(images: np.ndarray) -> np.ndarray:
    """[E[x], E[x^2]] over all pixels of a stack of equally sized images."""
    if images.size == 0:
        raise DataError("no images to compute intensity statistics from")
    x = images.astype(np.float64).reshape(len(images), -1)
    return np.array([x.mean(axis=1).mean(), (x * x).mean(axis=1).mean()])


def pooled_moments(moments: Sequence[np.ndarray], counts: Sequence[int]) -> np.ndarray:
    """The weighted mean of hospitals' moments (what secure aggregation yields, done in the clear)."""
    total = float(sum(counts))
    return np.sum([m * (n / total) for m, n in zip(moments, counts, strict=True)], axis=0)


def mean_std(moments: np.ndarray, floor: float = 1e-6) -> tuple[float, float]:
    mean, square = float(moments[0]), float(moments[1])
    return mean, math.sqrt(max(square - mean * mean, floor * floor))
