"""Partitioners: groups never span parts; Dirichlet proportions follow alpha; empty parts are errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primia.data.partition import dirichlet_partition, group_split, grouped_partition, iid_partition
from primia.errors import DataError


def _assert_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n)), "every sample in exactly one part"


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 30), min_size=6, max_size=200),
    parts=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_grouped_partition_never_splits_a_group(groups: list[int], parts: int, seed: int) -> None:
    g = np.asarray(groups)
    if len(np.unique(g)) < parts:
        with pytest.raises(DataError):
            grouped_partition(g, parts, seed)
        return
    result = grouped_partition(g, parts, seed)
    _assert_cover(result, len(g))
    owners = [set(g[p].tolist()) for p in result]
    for i in range(parts):
        for j in range(i + 1, parts):
            assert not owners[i] & owners[j]


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(0, 20), min_size=4, max_size=150), frac=st.floats(0.05, 0.6),
       seed=st.integers(0, 1000))
def test_group_split_is_disjoint_by_group(groups: list[int], frac: float, seed: int) -> None:
    g = np.asarray(groups)
    if len(np.unique(g)) < 2:
        return
    rest, held = group_split(g, frac, seed)
    _assert_cover([rest, held], len(g))
    assert len(held) > 0 and len(rest) > 0
    assert not set(g[rest].tolist()) & set(g[held].tolist())


def test_grouped_partition_balances_sizes() -> None:
    groups = np.repeat(np.arange(300), 3)
    sizes = [len(p) for p in grouped_partition(groups, 3, seed=0)]
    assert max(sizes) - min(sizes) <= 3


def test_iid_partition_sizes_and_cover() -> None:
    parts = iid_partition(101, 4, seed=3)
    _assert_cover(parts, 101)
    assert sorted(len(p) for p in parts) == [25, 25, 25, 26]


def test_dirichlet_proportions_follow_alpha() -> None:
    labels = np.repeat(np.arange(4), 2500)

    def skew(alpha: float) -> float:
        parts = dirichlet_partition(labels, 5, alpha, seed=1)
        shares = np.array([np.bincount(labels[p], minlength=4) / 2500 for p in parts])  # (parts, classes)
        return float(np.abs(shares - 0.2).mean())

    assert skew(1000.0) < 0.02  # near IID
    assert skew(0.1) > 0.15  # strongly skewed
    _assert_cover(dirichlet_partition(labels, 5, 0.5, seed=2), len(labels))


def test_dirichlet_mean_share_matches_expectation() -> None:
    # E[share of a part] = 1/num_parts for a symmetric Dirichlet: average over many classes
    labels = np.repeat(np.arange(200), 50)
    parts = dirichlet_partition(labels, 4, 1.0, seed=0)
    shares = np.array([len(p) for p in parts]) / len(labels)
    assert np.allclose(shares, 0.25, atol=0.05)


def test_empty_partition_is_an_error() -> None:
    labels = np.array([0] * 5 + [1] * 5)
    with pytest.raises(DataError, match=r"partition \d of 8 is empty"):
        for seed in range(50):  # tiny data and skew: some seed leaves a part empty
            dirichlet_partition(labels, 8, 0.05, seed)
    with pytest.raises(DataError, match="cannot split 2 samples into 3"):
        iid_partition(2, 3, 0)


def test_bad_alpha() -> None:
    with pytest.raises(DataError, match="alpha must be > 0"):
        dirichlet_partition(np.zeros(10, dtype=int), 2, 0.0, 0)
