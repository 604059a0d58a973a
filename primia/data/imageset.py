"""The in-memory form of a labelled image set, shared by every reader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primia.errors import DataError


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) float32 in [0, 1], integer labels, and a group id per image.

    A group is whatever must never be split across hospitals or between train and test:
    a patient, or a cluster of near-duplicate images. `sources` names each image's origin
    (a file path, or `file.npz[i]`) so errors can point at it.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    class_names: tuple[str, ...]
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4:
            raise DataError(f"images must have shape (N, C, H, W), got {self.images.shape}")
        if not (len(self.labels) == len(self.groups) == len(self.sources) == n):
            raise DataError("images, labels, groups and sources must have the same length")
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.class_names)))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"label {int(self.labels[i])} of {self.sources[i]} is out of range: expected 0.."
                f"{len(self.class_names) - 1} for classes {list(self.class_names)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            images=self.images[index],
            labels=self.labels[index],
            groups=self.groups[index],
            class_names=self.class_names,
            sources=tuple(self.sources[i] for i in index),
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    @staticmethod
    def concat(sets: list[ImageSet]) -> ImageSet:
        if not sets:
            raise DataError("cannot combine an empty list of image sets")
        names = sets[0].class_names
        for s in sets[1:]:
            if s.class_names != names:
                raise DataError(f"class names differ between image sets: {names} vs {s.class_names}")
        return ImageSet(
            images=np.concatenate([s.images for s in sets]),
            labels=np.concatenate([s.labels for s in sets]),
            groups=np.concatenate([s.groups for s in sets]),
            class_names=names,
            sources=tuple(src for s in sets for src in s.sources),
        )
