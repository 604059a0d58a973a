"""What a hospital contributes to a round as one ring vector for secure aggregation, and the sums back.

Everything the coordinator needs from a hospital travels inside the masked vector, so it learns only
sums over the round's hospitals (PriMIA and earlier primia revealed each hospital's counts and
validation confusion matrix in the clear):

    [ n*clip(local - global) in fixed point, tensor by tensor in name order ]   the update (P values)
    [ n ]  [ n*loss in fixed point ]  [ clipped coordinates ]                    the training tail
    [ confusion matrix of the incoming model, k*k counts ]  [ validation samples ]   the validation tail

A validation-only pass has no update and no training tail; the normalisation pass carries its two
moments as the "update" and no validation tail. The unmasked sum gives sample-weighted FedAvg
(numerator and denominator), the sample-weighted mean loss and the pooled confusion matrix exactly.
Sums are checked against the bounds each hospital signed: a corrupted or malicious input fails closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from primia.config import SecureAggregationConfig
from primia.errors import PrimiaError
from primia.secure.fixedpoint import FixedPoint, signed_int
from primia.store.weights import Weights

Privatizer = Callable[[np.ndarray], tuple[np.ndarray, bool]]  # update -> (noisy integers, clipped?)
LOSS_MAX = 64.0  # a local loss is clipped to [0, LOSS_MAX] before it is weighted and summed


def fixed_point(cfg: SecureAggregationConfig) -> FixedPoint:
    return FixedPoint(cfg.bits, cfg.frac_bits, cfg.clip)


def loss_point(cfg: SecureAggregationConfig) -> FixedPoint:
    """Fixed point for n*loss: the largest scale with max_hospitals * max_examples * LOSS_MAX in the ring."""
    room = (cfg.bits - 1) - math.log2(cfg.max_hospitals * cfg.max_examples * LOSS_MAX) - 1
    return FixedPoint(cfg.bits, max(0, min(math.floor(room), 40)), LOSS_MAX)


@dataclass(frozen=True)
class Layout:
    """Where each quantity sits in the vector. `params`: update values (0: validation only)."""

    params: int
    classes: int  # confusion matrix side (0: no validation tail)

    @staticmethod
    def of(template: Weights | None, classes: int) -> Layout:
        return Layout(0 if template is None else sum(int(np.prod(w.shape)) for w in template.values()), classes)

    @property
    def length(self) -> int:
        return self.params + (3 if self.params else 0) + (self.classes**2 + 1 if self.classes else 0)


@dataclass(frozen=True)
class Contribution:
    """A hospital's figures for the round, before encoding."""

    num_examples: int = 0
    loss: float = 0.0
    confusion: np.ndarray | None = None  # of the incoming model on the local validation split
    val_samples: int = 0


@dataclass(frozen=True)
class Sums:
    """What the coordinator learns from the unmasked sum."""

    mean: Weights | None  # start + weighted mean delta (None for a validation-only pass)
    num_examples: int
    train_loss: float  # sample-weighted mean of the hospitals' losses
    clipped: int
    confusion: np.ndarray | None
    val_samples: int


def flat_delta(local: Weights, start: Weights) -> np.ndarray:
    """local - start, every tensor in name order, as one float64 vector."""
    return np.concatenate([(local[k].astype(np.float64) - start[k].astype(np.float64)).ravel() for k in sorted(start)])


def encode(cfg: SecureAggregationConfig, layout: Layout, c: Contribution, local: Weights | None = None,
           start: Weights | None = None, private: Privatizer | None = None) -> tuple[np.ndarray, int]:
    """(ring vector, number of clipped coordinates). Fails closed outside the declared bounds.
    `private` (client-level DP): the update is sent as the integer vector it returns (clipped, quantized
    and noised), unweighted; `clipped` is then 1 when its norm had to be clipped."""
    fp, parts, clipped = fixed_point(cfg), [], 0
    if layout.params:
        if local is None or start is None:
            raise PrimiaError("a training contribution needs the local and the starting weights")
        _check_count(cfg, "training samples", c.num_examples, low=1)
        delta = flat_delta(local, start)
        if delta.size != layout.params:
            raise PrimiaError(f"the update has {delta.size} values, the round's layout {layout.params}")
        if not np.isfinite(delta).all() or not math.isfinite(c.loss):  # a diverged model would wreck the sum
            raise PrimiaError(f"the update has {int((~np.isfinite(delta)).sum())} non-finite values or a non-finite "
                              f"loss (training diverged): refusing to send it")
        if private is not None:
            noisy, was_clipped = private(delta)
            body, clipped = noisy.astype(np.int64).astype(fp.dtype), int(was_clipped)  # two's complement in the ring
        else:
            body, clipped = fp.encode(delta, c.num_examples)
        loss = loss_point(cfg).encode(np.array([c.loss]), c.num_examples)[0]
        parts += [body, fp.encode_int(np.array([c.num_examples])), loss, fp.encode_int(np.array([clipped]))]
    if layout.classes:
        cm = np.zeros((layout.classes, layout.classes), np.int64) if c.confusion is None else np.asarray(c.confusion)
        if cm.shape != (layout.classes, layout.classes) or (cm < 0).any() or int(cm.sum()) != c.val_samples:
            raise PrimiaError(f"confusion matrix {cm.shape} does not fit {layout.classes} classes and "
                              f"{c.val_samples} validation samples")
        _check_count(cfg, "validation samples", c.val_samples, low=0)
        parts += [fp.encode_int(cm.ravel()), fp.encode_int(np.array([c.val_samples]))]
    return np.concatenate(parts).astype(fp.dtype), clipped


def _check_count(cfg: SecureAggregationConfig, what: str, n: int, low: int) -> None:
    if not low <= n <= cfg.max_examples:
        raise PrimiaError(f"{n} {what} is outside {low}..secure_aggregation.max_examples ({cfg.max_examples}): the "
                          f"ring's overflow bound would not hold; raise max_examples")


def decode(cfg: SecureAggregationConfig, layout: Layout, total: np.ndarray, start: Weights | None,
           parties: int, weight_bound: int, client_scale: float | None = None) -> Sums:
    """The sums, after checking them against the bounds: `parties` hospitals each signed that its counts
    are at most its weight bound (their sum is `weight_bound`). `client_scale` (client-level DP): the
    update is the noisy integer sum of `parties` unweighted updates at that scale."""
    if total.size != layout.length:
        raise PrimiaError(f"aggregate has {total.size} elements, the round's layout needs {layout.length}")
    fp, at = fixed_point(cfg), layout.params
    mean, n_total, loss, clipped = None, 0, float("nan"), 0
    if layout.params:
        n_total, clipped = int(signed_int(total[at:at + 1])[0]), int(signed_int(total[at + 2:at + 3])[0])
        _check_sum("sample count", n_total, parties, weight_bound)
        _check_sum("clipped coordinates", clipped, 0, parties * layout.params)
        loss = float(loss_point(cfg).decode(total[at + 1:at + 2], n_total)[0])
        if not 0 <= loss <= LOSS_MAX:
            raise PrimiaError(f"aggregate loss {loss:.4g} is outside [0, {LOSS_MAX:g}]: the sum is corrupt")
        if client_scale is not None:
            _check_sum("clipped updates", clipped, 0, parties)
            delta = signed_int(total[:at]).astype(np.float64) / (client_scale * parties)
        else:
            delta = fp.decode(total[:at], n_total)
        if client_scale is None and np.abs(delta).max(initial=0.0) > cfg.clip + 1e-9:  # means of clipped values
            raise PrimiaError("aggregate update leaves the clipping bound: the sum is corrupt (or a hospital "
                              "overflowed the ring); nothing is stored")
        mean = _add(start, delta) if start is not None else None
        at += 3
    cm, val_n = None, 0
    if layout.classes:
        k2 = layout.classes**2
        cm = signed_int(total[at:at + k2]).reshape(layout.classes, layout.classes)
        val_n = int(signed_int(total[at + k2:at + k2 + 1])[0])
        _check_sum("validation sample count", val_n, 0, weight_bound)
        if (cm < 0).any() or int(cm.sum()) != val_n:
            raise PrimiaError("aggregate confusion matrix does not add up to the validation samples: the sum is "
                              "corrupt")
    return Sums(mean, n_total, loss, clipped, cm, val_n)


def _check_sum(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise PrimiaError(f"aggregate {what} {value} is outside {low}..{high} (what the hospitals in the sum signed "
                          f"as their bounds): the sum is corrupt; nothing is stored")


def _add(start: Weights, delta: np.ndarray) -> Weights:
    out: Weights = {}
    offset = 0
    for k in sorted(start):
        w = start[k]
        size = int(np.prod(w.shape))
        new = w.astype(np.float64) + delta[offset:offset + size].reshape(w.shape)
        out[k] = np.rint(new).astype(w.dtype) if np.issubdtype(w.dtype, np.integer) else new.astype(w.dtype)
        offset += size
    return {k: out[k] for k in start}


def statistics_config(cfg: SecureAggregationConfig) -> SecureAggregationConfig:
    """The normalisation pass aggregates three numbers: a 64-bit ring costs nothing there and makes its
    quantization (about 2^-39) negligible, so secure and plaintext statistics agree."""
    return cfg.model_copy(update={"bits": 64})


# kept for callers that aggregate a plain update only (benchmarks, tests)
def vector_length(template: Weights) -> int:
    return Layout.of(template, 0).length


def encode_update(cfg: SecureAggregationConfig, local: Weights, start: Weights, num_examples: int
                  ) -> tuple[np.ndarray, int]:
    return encode(cfg, Layout.of(start, 0), Contribution(num_examples), local, start)


def decode_mean(cfg: SecureAggregationConfig, total: np.ndarray, start: Weights) -> tuple[Weights, int]:
    sums = decode(cfg, Layout.of(start, 0), total, start, 1, 2**62)
    assert sums.mean is not None
    return sums.mean, sums.num_examples
