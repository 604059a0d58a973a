"""Process-wide handles built once from settings: the object store, checkpoint stores, trackers.

Tasks take small references (ids, CheckpointRefs) and look the heavy handles up here, so nothing
with a connection pool or a secret is passed through Prefect.
"""

from __future__ import annotations

import base64
import threading
from functools import lru_cache

from primia.config import Settings, load_settings
from primia.errors import StoreError
from primia.federation.identity import Identity, load_identity
from primia.messages import CheckpointRef
from primia.store.checkpoints import CheckpointStore
from primia.store.keys import KeyRing, load_keyring
from primia.store.s3 import ObjectStore
from primia.tracking.mlflow_tracker import Tracker

_lock = threading.Lock()


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def object_store() -> ObjectStore:
    store = ObjectStore(settings().s3, store=settings().store)
    store.ensure_bucket(versioning=True)
    return store


@lru_cache(maxsize=1)
def keyring() -> KeyRing:
    return load_keyring(settings().crypto, settings().home)


@lru_cache(maxsize=1)
def identity() -> Identity:
    """This hospital agent's identity (private keys from its own keys folder)."""
    agent = settings().hospital
    folder = agent.keys_dir or settings().home / "hospitals" / (agent.name or "unnamed")
    return load_identity(folder, agent.passphrase.get_secret_value() if agent.passphrase else None)


_checkpoint_stores: dict[str, CheckpointStore] = {}


def checkpoints(federation_id: str) -> CheckpointStore:
    with _lock:
        if federation_id not in _checkpoint_stores:
            _checkpoint_stores[federation_id] = CheckpointStore(object_store(), federation_id, keyring())
        return _checkpoint_stores[federation_id]


def federation_of(ref: CheckpointRef) -> str:
    """The federation (checkpoint namespace) a reference belongs to, from its key."""
    parts = ref.key.split("/")
    if len(parts) < 3 or parts[0] != "federations":
        raise StoreError(f"checkpoint key {ref.key!r} is not under federations/<id>/")
    return parts[1]


def secrets() -> list[str]:
    """Every secret value this process knows, so trackers can refuse to log any of them."""
    s = settings()
    values = [v.get_secret_value() for v in (s.s3.access_key, s.s3.secret_key, s.crypto.master_key,
                                             s.crypto.previous_keys, s.crypto.signing_key,
                                             s.hospital.passphrase) if v is not None]
    ring = keyring()
    values += [base64.b64encode(k).decode() for k in ring.keks.values()]
    return values


def tracker(run_id: str | None = None) -> Tracker:
    t = Tracker(settings().mlflow, secrets=secrets())
    t.run_id = run_id
    return t


def reset() -> None:
    """Forget cached handles (tests switch stacks; settings may change)."""
    settings.cache_clear()
    object_store.cache_clear()
    keyring.cache_clear()
    identity.cache_clear()
    with _lock:
        _checkpoint_stores.clear()
