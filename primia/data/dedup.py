"""Near-duplicate grouping: images that are the same picture up to resizing, brightness or
re-encoding are put in one group, so they never end up on both sides of a split."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def fingerprints(images: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, C, H, W) -> (N, size*size) zero-mean unit-norm thumbnails (brightness/contrast invariant)."""
    n, _, h, w = images.shape
    fy, fx = max(h // size, 1), max(w // size, 1)
    gray = images.mean(axis=1)[:, : fy * size, : fx * size]
    thumbs = gray.reshape(n, size, fy, size, fx).mean(axis=(2, 4)).reshape(n, -1).astype(np.float64)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(thumbs, axis=1, keepdims=True)
    return thumbs / np.where(norms == 0, 1.0, norms)


def near_duplicate_groups(images: np.ndarray, threshold: float = 0.98, size: int = 32) -> np.ndarray:
    """Group ids (0..G-1) such that images whose thumbnails correlate above `threshold` share one.

    Grouping is transitive (connected components), so chains of near-duplicates form one group.
    """
    fp = fingerprints(images, size)
    rows, cols = [], []
    block = 1024  # bounds memory: a (block x N) correlation slab at a time
    for start in range(0, len(fp), block):
        corr = fp[start : start + block] @ fp.T
        r, c = np.nonzero(corr >= threshold)
        rows.append(r + start)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(len(fp), len(fp)))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)
