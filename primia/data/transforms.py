"""MONAI transforms: deterministic preprocessing at load time, seeded augmentation at training time."""

from __future__ import annotations

import numpy as np
from monai.data import set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    Resize,
    ScaleIntensity,
)

from primia.config import AugmentConfig


def preprocess(image: np.ndarray, image_size: int) -> np.ndarray:
    """2-D array of any size -> (1, S, S) float32 scaled to [0, 1]."""
    chw = image[None].astype(np.float32)
    out = Compose([Resize((image_size, image_size), mode="area"), ScaleIntensity(minv=0.0, maxv=1.0)])(chw)
    return np.asarray(out, dtype=np.float32)


def augmentation(cfg: AugmentConfig, seed: int) -> Compose | None:
    """Seeded random augmentation (flips, affine, noise, contrast) over (C, H, W) arrays."""
    if not cfg.enabled:
        return None
    set_track_meta(False)  # plain tensors: MONAI's metadata tracking triples the cost per sample here
    rot = np.deg2rad(cfg.rotate_deg)
    aug = Compose(
        [
            RandFlip(prob=cfg.flip_prob, spatial_axis=1),
            RandAffine(
                prob=cfg.affine_prob,
                rotate_range=(rot,),
                scale_range=(cfg.scale, cfg.scale),
                padding_mode="zeros",
            ),
            RandGaussianNoise(prob=0.5 if cfg.noise_std > 0 else 0.0, std=cfg.noise_std),
            RandAdjustContrast(prob=0.5, gamma=cfg.contrast_gamma),
        ]
    )
    aug.set_random_state(seed=seed)
    return aug
