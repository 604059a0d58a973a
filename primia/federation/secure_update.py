"""A hospital's update as one ring vector for secure aggregation, and the unmasked sum back as weights.

The vector is weight * clip(local - global) in fixed point, tensor by tensor in name order, followed
by the weight itself (the sample count) as a plain integer: the unmasked sum carries both the
numerator and the denominator of sample-weighted FedAvg. (Each hospital's count is still in its signed
answer for the round table; taking it out of there is a follow-up.)
"""

from __future__ import annotations

import numpy as np

from primia.config import SecureAggregationConfig
from primia.errors import PrimiaError
from primia.secure.fixedpoint import FixedPoint, signed_int
from primia.store.weights import Weights

TAIL = 1  # the sample count


def fixed_point(cfg: SecureAggregationConfig) -> FixedPoint:
    return FixedPoint(cfg.bits, cfg.frac_bits, cfg.clip)


def vector_length(template: Weights) -> int:
    return sum(int(np.prod(w.shape)) for w in template.values()) + TAIL


def encode_update(cfg: SecureAggregationConfig, local: Weights, start: Weights, num_examples: int
                  ) -> tuple[np.ndarray, int]:
    """(ring vector, number of clipped coordinates). Fails closed above the declared sample bound."""
    if not 0 < num_examples <= cfg.max_examples:
        raise PrimiaError(f"{num_examples} training samples is outside 1..secure_aggregation.max_examples "
                          f"({cfg.max_examples}): the ring's overflow bound would not hold; raise max_examples")
    fp = fixed_point(cfg)
    delta = np.concatenate([(local[k].astype(np.float64) - start[k].astype(np.float64)).ravel()
                            for k in sorted(start)])
    if not np.isfinite(delta).all():  # a diverged model would silently wreck (or vanish from) the sum
        raise PrimiaError(f"the update has {int((~np.isfinite(delta)).sum())} non-finite values (training "
                          f"diverged): refusing to send it")
    body, clipped = fp.encode(delta, num_examples)
    return np.concatenate([body, fp.encode_int(np.array([num_examples]))]), clipped


def decode_mean(cfg: SecureAggregationConfig, total: np.ndarray, start: Weights) -> tuple[Weights, int]:
    """(start + weighted mean of the deltas, total samples) from the unmasked ring sum."""
    if total.size != vector_length(start):
        raise PrimiaError(f"aggregate has {total.size} elements, the model needs {vector_length(start)}")
    n_total = int(signed_int(total[-TAIL:])[0])
    if n_total <= 0:
        raise PrimiaError(f"aggregate sample count is {n_total}: the sum is corrupt")
    mean = fixed_point(cfg).decode(total[:-TAIL], n_total)
    out: Weights = {}
    offset = 0
    for k in sorted(start):
        w = start[k]
        size = int(np.prod(w.shape))
        new = w.astype(np.float64) + mean[offset:offset + size].reshape(w.shape)
        out[k] = np.rint(new).astype(w.dtype) if np.issubdtype(w.dtype, np.integer) else new.astype(w.dtype)
        offset += size
    return {k: out[k] for k in start}, n_total


def statistics_config(cfg: SecureAggregationConfig) -> SecureAggregationConfig:
    """The normalisation pass aggregates three numbers: a 64-bit ring costs nothing there and makes its
    quantization (about 2^-39) negligible, so secure and plaintext statistics agree."""
    return cfg.model_copy(update={"bits": 64})
