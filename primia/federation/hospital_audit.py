"""A hospital's part of the privacy audit: the membership attack on its own samples.

The committed global model of the round, attacked where the members are: its own training samples
(members) against its own held-out samples (non-members, split by group). Only the figures leave, in a
signed answer like any other; no image, score or sample count of the training set does.
"""

from __future__ import annotations

import time

import torch

from primia.audit.round_audit import hospital_membership
from primia.config import HospitalConfig, LocalSpec
from primia.errors import ConfigError
from primia.federation.hospital import derive_seed, load_local_data, model_from_weights
from primia.messages import CheckpointRef, HospitalResult
from primia.store.checkpoints import CheckpointStore


def run_membership_audit(hospital: HospitalConfig, server_round: int, global_ref: CheckpointRef, cfg: LocalSpec,
                         checkpoints: CheckpointStore, nonce: str = "") -> HospitalResult:
    """Loss-threshold and RMIA membership figures of the round's committed global model on this hospital's
    data (only a model the coordinator committed and signed is attacked)."""
    if global_ref.round != server_round:  # else any committed model could be named, round after round
        raise ConfigError(f"hospital {hospital.name}: the membership audit of round {server_round} named the model "
                          f"of round {global_ref.round}: refused")
    checkpoints.verify_committed(global_ref)
    data = load_local_data(hospital, cfg)
    model = model_from_weights(cfg, checkpoints.get_weights(global_ref))
    start = time.perf_counter()
    figures = hospital_membership(model, (torch.as_tensor(data.train.images), torch.as_tensor(data.train.labels)),
                                  (torch.as_tensor(data.val.images), torch.as_tensor(data.val.labels)),
                                  data.val.groups, seed=derive_seed(cfg.seed, "mia", hospital.name, server_round))
    return HospitalResult(hospital=hospital.name, round=server_round, num_examples=0, update=None,
                          train_loss=float("nan"), val_confusion=(), local_s=time.perf_counter() - start,
                          metrics={k: round(v, 3) for k, v in figures.items()}, nonce=nonce)
