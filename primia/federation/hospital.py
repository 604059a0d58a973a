"""One hospital's part of a round: validate the incoming global model, train locally, return an update.

Pure core: reads the hospital's own data and talks to the object store through `CheckpointStore`;
the Prefect task around it is a thin wrapper.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from primia.config import HospitalConfig, LocalSpec
from primia.data.imageset import ImageSet
from primia.data.partition import group_split
from primia.data.sources import cached_source
from primia.data.statistics import STATS_KEY, local_moments, stats_start
from primia.errors import DataError
from primia.federation.private_round import open_client_release, train_sample_dp
from primia.federation.secure_update import Contribution, Layout, encode, statistics_config
from primia.federation.strategies import make_strategy
from primia.messages import CheckpointRef, HospitalResult
from primia.models.factory import build_model
from primia.privacy.keeper import AccountKeeper
from primia.store.checkpoints import CheckpointStore
from primia.store.weights import Weights, numpy_to_state, state_to_numpy
from primia.store.weights import digest as weights_digest
from primia.training.loops import predict, train_epochs
from primia.training.metrics import confusion_matrix

log = logging.getLogger("primia.hospital")


@dataclass(frozen=True)
class LocalData:
    train: ImageSet
    val: ImageSet


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from the federation seed, round, hospital name, ..."""
    words = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:16].ljust(16, b"\0"), "little") % 2**32
             for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def load_local_data(hospital: HospitalConfig, cfg: LocalSpec) -> LocalData:
    """The hospital's images, split into train and validation by group (never a patient on both sides)."""
    if hospital.data is None:
        raise DataError(f"hospital {hospital.name}: no data source configured (PRIMIA_HOSPITAL__DATA__PATH)")
    data = cached_source(hospital.data, cfg.data.image_size, cfg.class_names)
    check_classes(data, cfg, f"hospital {hospital.name}")
    if len(np.unique(data.groups)) < 2:
        raise DataError(f"hospital {hospital.name}: needs at least 2 groups to hold out validation data")
    train_idx, val_idx = group_split(data.groups, cfg.data.val_fraction, derive_seed(cfg.seed, hospital.name))
    return LocalData(train=data.subset(train_idx), val=data.subset(val_idx))


def check_classes(data: ImageSet, cfg: LocalSpec, what: str) -> None:
    if data.num_classes != cfg.model.num_classes:
        raise DataError(
            f"{what}: data has {data.num_classes} classes {list(data.class_names)} but model.num_classes is "
            f"{cfg.model.num_classes} (set class_names in the config to fix the class list)"
        )


def model_from_weights(cfg: LocalSpec, weights: Weights) -> torch.nn.Module:
    model = build_model(cfg.model)
    model.load_state_dict(numpy_to_state(weights))
    return model


class SecureJoin(Protocol):
    """The hospital's part of secure aggregation (see primia.secure.transport.HospitalSide)."""

    def prepare(self) -> None: ...

    def bind_model(self, weights_digest: str) -> None: ...

    def submit(self, vector: np.ndarray, weight_bound: int, extra: dict[str, Any] | None = None) -> None: ...


@contextmanager
def preparing(secure: SecureJoin | None) -> Iterator[None]:
    """Run the protocol's key exchange and shares (advertise, share: they need neither the model nor the
    data) on a helper thread while the body checks and downloads the model, reads the data and
    validates. Leaving the block waits for the exchange and raises its error, so training after the
    block spends no privacy on a failed exchange. The exchange starts at once, within its stage deadline
    whatever the data read costs, and is seen through even when the body failed: a hospital whose
    shares went out is recoverable by the others."""
    if secure is None:
        yield
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="secagg-prepare") as pool:
        exchange = pool.submit(contextvars.copy_context().run, secure.prepare)
        try:
            yield
        except BaseException:
            wait([exchange])  # what it raised must not vanish behind the hospital's own error
            if exchange.exception() is not None:
                log.warning("secure aggregation's key exchange failed too: %s", exchange.exception())
            raise
        exchange.result()  # the exchange went through (or its error is raised) before any privacy is spent


def run_local_round(
    hospital: HospitalConfig,
    server_round: int,
    global_ref: CheckpointRef,
    cfg: LocalSpec,
    checkpoints: CheckpointStore,
    train: bool = True,
    nonce: str = "",
    secure: SecureJoin | None = None,
    seed_salt: str = "",
    outbox: CheckpointStore | None = None,
    validate: bool = True,
    keeper: AccountKeeper | None = None,
) -> HospitalResult:
    """Validate the global model on local validation data, then (if `train`) train and upload the
    update - or, under secure aggregation, contribute update, counts, loss and confusion matrix only in
    masked form (nothing of this hospital leaves in the clear). Only a committed global model that the
    coordinator signed is validated or trained on. `seed_salt` (an agent's fresh randomness) makes a
    retried attempt train afresh instead of repeating the same update. A plaintext update goes to
    `outbox` (the hospital's own store; default: `checkpoints`, which it reads the global model from).
    Under sample-level DP it trains with DP-SGD on the account `keeper` holds, and declines the round
    (PrivacyError) when that would take the account past its budget."""
    with preparing(secure):
        checkpoints.verify_committed(global_ref)
        data = load_local_data(hospital, cfg)
        start_weights = checkpoints.get_weights(global_ref)
        if secure is not None:
            secure.bind_model(weights_digest(start_weights))
        model = model_from_weights(cfg, start_weights)
        start = time.perf_counter()
        k = cfg.model.num_classes
        val_cm = confusion_matrix(data.val.labels, predict(model, data.val).argmax(axis=1), k) if validate else \
            np.zeros((k, k), dtype=np.int64)
    loss, update, metrics = float("nan"), None, {"val_samples": float(len(data.val))}
    privacy: dict[str, float] = {}
    release = open_client_release(keeper, cfg, hospital, start_weights, secure) \
        if train and cfg.privacy.mode == "client" else None
    if train:
        seed = derive_seed(cfg.seed, server_round, hospital.name, *([seed_salt] if seed_salt else []))
        torch.manual_seed(seed)
        if cfg.privacy.mode == "sample":
            loss, privacy = train_sample_dp(model, data.train, cfg, hospital, keeper, seed)
        else:
            mu = make_strategy(cfg.strategy).proximal_mu
            loss = train_epochs(model, data.train, cfg.training, cfg.data.augment, seed, proximal_mu=mu)
    metrics |= privacy
    local_s = time.perf_counter() - start
    if secure is not None:
        sa, local = cfg.secure_aggregation, state_to_numpy(model.state_dict())
        layout = Layout.of(start_weights if train else None, k if validate else 0)
        contribution = Contribution(len(data.train), loss if train else 0.0, val_cm, len(data.val) if validate else 0)
        vector, _ = encode(sa, layout, contribution, local, start_weights, release.privatize if release else None)
        if release is not None:
            privacy = release.spend()  # stored before the vector leaves
        secure.submit(vector, sa.max_examples, {"nonce": nonce})
        return _masked_result(hospital.name, server_round, local_s, nonce, privacy)
    if train:
        update = (outbox or checkpoints).put_weights(server_round, state_to_numpy(model.state_dict()),
                                                     hospital=hospital.name)
    return HospitalResult(
        hospital=hospital.name, round=server_round, num_examples=len(data.train), update=update,
        train_loss=loss, val_confusion=tuple(tuple(int(v) for v in row) for row in val_cm), local_s=local_s,
        metrics=metrics, nonce=nonce,
    )


def _masked_result(hospital: str, server_round: int, local_s: float, nonce: str,
                   privacy: dict[str, float] | None = None) -> HospitalResult:
    """What a hospital says in the clear when everything else went into the masked vector: that it took
    part, how long its local work took and the privacy it has spent (its epsilon, a function of its
    sample rate, tells its data set's size roughly)."""
    return HospitalResult(hospital=hospital, round=server_round, num_examples=0, update=None, train_loss=float("nan"),
                          val_confusion=(), local_s=local_s, metrics={"masked": 1.0, **(privacy or {})}, nonce=nonce)


def run_local_statistics(hospital: HospitalConfig, server_round: int, cfg: LocalSpec, nonce: str = "",
                         secure: SecureJoin | None = None) -> HospitalResult:
    """The hospital's intensity moments for input normalisation: only masked under secure
    aggregation, else (its privacy switched off by configuration) in the result's metrics."""
    if secure is not None:
        secure.prepare()
    data = load_local_data(hospital, cfg)
    start = time.perf_counter()
    moments = local_moments(data.train.images)
    metrics = {"val_samples": float(len(data.val))}
    if secure is not None:
        sa = statistics_config(cfg.secure_aggregation)
        vector, _ = encode(sa, Layout.of(stats_start(), 0), Contribution(len(data.train)), {STATS_KEY: moments},
                           stats_start())
        secure.submit(vector, sa.max_examples, {"nonce": nonce})
        return _masked_result(hospital.name, server_round, time.perf_counter() - start, nonce)
    metrics |= {"input_mean_moment": float(moments[0]), "input_square_moment": float(moments[1])}
    empty = tuple(tuple(0 for _ in range(cfg.model.num_classes)) for _ in range(cfg.model.num_classes))
    return HospitalResult(hospital=hospital.name, round=server_round, num_examples=len(data.train), update=None,
                          train_loss=float("nan"), val_confusion=empty, local_s=time.perf_counter() - start,
                          metrics=metrics, nonce=nonce)
