"""Local training and evaluation loops over an ImageSet."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from primia.config import AugmentConfig, TrainingConfig
from primia.data.imageset import ImageSet
from primia.data.transforms import augmentation


class Augmented(Dataset):
    def __init__(self, data: ImageSet, aug_cfg: AugmentConfig | None, seed: int) -> None:
        self.images, self.labels = data.images, data.labels
        self.aug = augmentation(aug_cfg, seed) if aug_cfg is not None else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.aug is not None:
            x = self.aug(x)
        return torch.as_tensor(np.asarray(x), dtype=torch.float32), int(self.labels[i])


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """PriMIA's 1/count weighting, normalised to mean 1; an absent class gets weight 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.as_tensor(w / w[w > 0].mean(), dtype=torch.float32)


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epochs(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainingConfig,
    aug_cfg: AugmentConfig | None,
    seed: int,
    epochs: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    proximal_mu: float = 0.0,
) -> float:
    """Train in place; returns the mean training loss over the last epoch.

    With `proximal_mu` > 0 (FedProx) the loss gains (mu/2)||w - w_start||^2, w_start being the
    weights the model had on entry: the global model of the round.
    """
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(Augmented(data, aug_cfg, seed), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    weight = class_weights(data.labels, data.num_classes) if cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = optimizer or make_optimizer(model, cfg)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    mean = float("nan")
    for _ in range(epochs or cfg.local_epochs):
        total, count = 0.0, 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if anchor:
                drift = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                loss = loss + 0.5 * proximal_mu * drift
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        mean = total / max(count, 1)
    return mean


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, K)."""
    model.eval()
    out = [torch.softmax(model(torch.as_tensor(data.images[i : i + batch_size])), dim=1)
           for i in range(0, len(data), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, data.num_classes), dtype=np.float32)
