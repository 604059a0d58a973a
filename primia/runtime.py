"""Process-wide handles built once from settings: the object store, checkpoint stores, trackers.

Tasks take small references (ids, CheckpointRefs) and look the heavy handles up here, so nothing
with a connection pool or a secret is passed through Prefect.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from primia.config import Settings, load_settings
from primia.store.checkpoints import CheckpointStore
from primia.store.s3 import ObjectStore
from primia.tracking.mlflow_tracker import Tracker

_lock = threading.Lock()


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def object_store() -> ObjectStore:
    store = ObjectStore(settings().s3)
    store.ensure_bucket()
    return store


_checkpoint_stores: dict[str, CheckpointStore] = {}


def checkpoints(federation_id: str) -> CheckpointStore:
    with _lock:
        if federation_id not in _checkpoint_stores:
            _checkpoint_stores[federation_id] = CheckpointStore(object_store(), federation_id)
        return _checkpoint_stores[federation_id]


def secrets() -> list[str]:
    s3 = settings().s3
    return [v.get_secret_value() for v in (s3.access_key, s3.secret_key) if v is not None]


def tracker(run_id: str | None = None) -> Tracker:
    t = Tracker(settings().mlflow, secrets=secrets())
    t.run_id = run_id
    return t


def reset() -> None:
    """Forget cached handles (tests switch stacks; settings may change)."""
    settings.cache_clear()
    object_store.cache_clear()
    with _lock:
        _checkpoint_stores.clear()
