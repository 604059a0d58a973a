"""Process-wide handles built once from settings: the object store, checkpoint stores, trackers.

Tasks take small references (ids, CheckpointRefs) and look the heavy handles up here, so nothing
with a connection pool or a secret is passed through Prefect.
"""

from __future__ import annotations

import base64
import os
import threading
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from primia.config import Settings, load_settings
from primia.errors import StoreError
from primia.federation.identity import Identity, load_identity
from primia.federation.roster import Pin, Roster
from primia.federation.trust import fetch as fetch_roster
from primia.messages import CheckpointRef
from primia.store import history
from primia.store.checkpoints import CheckpointStore
from primia.store.keys import KeyRing, load_keyring
from primia.store.s3 import ObjectStore
from primia.tracking.mlflow_tracker import Tracker

_lock = threading.RLock()  # checkpoints() builds a bucket store under it


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def object_store() -> ObjectStore:
    store = ObjectStore(settings().s3, store=settings().store)
    if is_coordinator():  # a hospital may only read the coordinator's bucket
        store.ensure_bucket(versioning=True)
    return store


@lru_cache(maxsize=1)
def keyring() -> KeyRing:
    return load_keyring(settings().crypto, settings().home)


@lru_cache(maxsize=1)
def identity() -> Identity:
    """This hospital agent's identity (private keys from its own keys folder)."""
    agent = settings().hospital
    return load_identity(hospital_keys_dir(), agent.passphrase.get_secret_value() if agent.passphrase else None)


_checkpoint_stores: dict[tuple[str, str], CheckpointStore] = {}


def bucket_store(bucket: str) -> ObjectStore:
    """The object store on another bucket with this party's credentials (a hospital's mailbox)."""
    with _lock:
        if bucket not in _bucket_stores:
            _bucket_stores[bucket] = ObjectStore(settings().s3, bucket=bucket, store=settings().store)
        return _bucket_stores[bucket]


_bucket_stores: dict[str, ObjectStore] = {}


def checkpoints(federation_id: str, bucket: str | None = None) -> CheckpointStore:
    """A federation's checkpoints in the coordinator's bucket (default) or in `bucket` (a hospital's
    mailbox). At a hospital, manifests are checked against the coordinator key of the signed roster."""
    key = (federation_id, bucket or settings().s3.bucket)
    with _lock:
        if key not in _checkpoint_stores:
            store = object_store() if bucket is None else bucket_store(bucket)
            coordinator = is_coordinator()
            verify = None if coordinator else _coordinator_public()
            memory = history.Memory(settings().home / "coordinator" / "heads") if coordinator else None
            _checkpoint_stores[key] = CheckpointStore(store, federation_id, keyring(), verify, memory)
        return _checkpoint_stores[key]


def is_coordinator() -> bool:
    """A hospital agent names itself (PRIMIA_HOSPITAL__NAME); the coordinator does not."""
    return settings().hospital.name is None


def roster_pin() -> Pin:
    """This party's pin of the federation authority key and the newest roster version it saw."""
    s = settings()
    if is_coordinator():
        pin = Pin(s.home / "coordinator" / "roster-pin.json")
        key = s.federation.authority_key
    else:
        pin = Pin(hospital_keys_dir() / "roster-pin.json")
        key = s.hospital.authority_key
    if key is not None:
        pin.enrol(key)
    return pin


def roster() -> Roster:
    """The signed roster, as published in the coordinator's bucket and checked against the pin."""
    return fetch_roster(object_store(), roster_pin())


def _coordinator_public() -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(roster().coordinator_key))


def hospital_keys_dir() -> Path:
    agent = settings().hospital
    return agent.keys_dir or settings().home / "hospitals" / (agent.name or "unnamed")


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
                                             s.hospital.passphrase, s.prefect.auth_string, s.mlflow.password)
              if v is not None]
    ring = keyring()
    values += [base64.b64encode(k).decode() for k in ring.keks.values()]
    return values


def tracker(run_id: str | None = None) -> Tracker:
    m = settings().mlflow
    if m.username is not None and m.password is not None:  # MLflow's client reads its login from the environment
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", m.username.get_secret_value())
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", m.password.get_secret_value())
    t = Tracker(m, secrets=secrets())
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
        _bucket_stores.clear()
