"""Sample-weighted federated averaging over flat weight dicts (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from primia.errors import PrimiaError
from primia.store.weights import Weights


def weighted_average(updates: Sequence[Weights], num_examples: Sequence[int]) -> Weights:
    """Mean of each tensor weighted by `num_examples` (samples, not batches).

    Accumulates in float64 so the result does not depend on the order of hospitals beyond
    rounding; integer tensors (counters) take the weighted mean rounded to the nearest integer.
    """
    if not updates:
        raise PrimiaError("cannot aggregate zero updates")
    if len(updates) != len(num_examples):
        raise PrimiaError(f"{len(updates)} updates but {len(num_examples)} sample counts")
    if any(n <= 0 for n in num_examples):
        raise PrimiaError(f"every update needs a positive num_examples, got {list(num_examples)}")
    keys = set(updates[0])
    for i, u in enumerate(updates[1:], start=2):
        if set(u) != keys:
            raise PrimiaError(f"update {i} has different tensor names from update 1")
    total = float(sum(num_examples))
    out: Weights = {}
    for k, ref in updates[0].items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for u, n in zip(updates, num_examples, strict=True):
            if u[k].shape != ref.shape:
                raise PrimiaError(f"tensor {k}: shape {u[k].shape} does not match {ref.shape}")
            acc += u[k].astype(np.float64) * (n / total)
        out[k] = np.rint(acc).astype(ref.dtype) if np.issubdtype(ref.dtype, np.integer) else acc.astype(ref.dtype)
    return out
