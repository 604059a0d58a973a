"""Near-duplicate grouping against known answers."""

from __future__ import annotations

import numpy as np

from primia.data.dedup import near_duplicate_groups
from primia.data.synthetic import make_synthetic


def test_copies_group_together_distinct_images_do_not() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((6, 1, 64, 64)).astype(np.float32)
    brighter = np.clip(base[:3] * 0.8 + 0.1, 0, 1)  # re-exposed copies of images 0..2
    noisy = np.clip(base[:3] + rng.normal(0, 0.01, base[:3].shape), 0, 1).astype(np.float32)
    groups = near_duplicate_groups(np.concatenate([base, brighter, noisy]))
    for i in range(3):
        assert groups[i] == groups[6 + i] == groups[9 + i]
    assert len(set(groups[:6].tolist())) == 6


def test_synthetic_classes_are_not_merged_wholesale() -> None:
    data = make_synthetic(60, 2, 32, seed=0, noise=0.3)
    groups = near_duplicate_groups(data.images)
    assert groups.max() + 1 > 30
