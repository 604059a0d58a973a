"""Synthetic labelled images for fast tests: each class draws a bright blob at its own place,
each 'patient' (group) has its own jitter, so groups matter and classes are learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from primia.data.imageset import ImageSet


def make_synthetic(
    n: int, num_classes: int = 2, size: int = 32, seed: int = 0, per_group: int = 3, noise: float = 0.15
) -> ImageSet:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    groups = np.arange(n) // max(per_group, 1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    centres = [(0.3 + 0.4 * np.cos(2 * np.pi * k / num_classes), 0.5 + 0.3 * np.sin(2 * np.pi * k / num_classes))
               for k in range(num_classes)]
    jitter = rng.normal(0, 0.05, size=(groups.max() + 1, 2))
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx = np.asarray(centres[labels[i]]) + jitter[groups[i]]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        img = 0.2 + 0.6 * blob + rng.normal(0, noise, size=(size, size))
        images[i, 0] = np.clip(img, 0, 1)
    names = tuple(f"class{k}" for k in range(num_classes))
    groups_s = np.asarray([f"patient{g}" for g in groups], dtype=object)
    return ImageSet(images, labels.astype(np.int64), groups_s, names, tuple(f"synthetic[{i}]" for i in range(n)))


def write_image_folder(data: ImageSet, root: Path, with_groups: bool = True) -> Path:
    """Write an ImageSet as `root/<class>/<i>.png` (+ groups.csv), the layout the folder reader takes."""
    from PIL import Image

    root = Path(root)
    rows = ["file,group"]
    for i in range(len(data)):
        rel = f"{data.class_names[data.labels[i]]}/{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((data.images[i, 0] * 255).astype(np.uint8)).save(root / rel)
        rows.append(f"{rel},{data.groups[i]}")
    if with_groups:
        (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root
