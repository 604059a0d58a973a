"""Centralized baseline: the same model trained on the union of the hospitals' training data,
for the same number of passes over every sample (rounds x local epochs)."""

from __future__ import annotations

import time

import numpy as np
import torch

from primia.config import FederationConfig
from primia.data.imageset import ImageSet
from primia.data.statistics import local_moments, mean_std
from primia.federation.hospital import derive_seed, load_local_data
from primia.messages import HospitalResult
from primia.models.factory import build_model, set_input_normalization
from primia.store.weights import Weights, state_to_numpy
from primia.training.loops import make_optimizer, predict, train_epochs
from primia.training.metrics import confusion_matrix


class CentralizedTrainer:
    """Holds model and optimizer across epochs (a centralized run keeps its optimizer state)."""

    def __init__(self, cfg: FederationConfig) -> None:
        parts = [load_local_data(h, cfg) for h in cfg.hospitals]
        self.cfg = cfg
        self.train = ImageSet.concat([p.train for p in parts])
        self.val = ImageSet.concat([p.val for p in parts])
        self.model = build_model(cfg.model, seed=cfg.seed)
        if cfg.data.normalize == "federated":  # pooled statistics: what the federation computes securely
            set_input_normalization(self.model, *mean_std(local_moments(self.train.images)))
        self.optimizer = make_optimizer(self.model, cfg.training)

    @property
    def epochs(self) -> int:
        return self.cfg.rounds * self.cfg.training.local_epochs

    def run_epoch(self, epoch: int) -> HospitalResult:
        """One pass over the pooled training data, then validation on the pooled validation data."""
        start = time.perf_counter()
        seed = derive_seed(self.cfg.seed, epoch, "centralized")
        torch.manual_seed(seed)
        loss = train_epochs(self.model, self.train, self.cfg.training, self.cfg.data.augment, seed, epochs=1,
                            optimizer=self.optimizer)
        probs = predict(self.model, self.val)
        cm = confusion_matrix(self.val.labels, probs.argmax(axis=1), self.cfg.model.num_classes)
        return HospitalResult(
            hospital="centralized", round=epoch, num_examples=len(self.train), update=None, train_loss=loss,
            val_confusion=tuple(tuple(int(v) for v in row) for row in np.asarray(cm)),
            local_s=time.perf_counter() - start, metrics={"val_samples": float(len(self.val))},
        )

    def weights(self) -> Weights:
        return state_to_numpy(self.model.state_dict())
