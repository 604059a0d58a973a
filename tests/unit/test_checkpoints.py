"""Envelope encryption, keys, signed manifests and atomic rounds (unit level, in-memory store)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.config import CryptoSettings, parse_federation_config
from primia.errors import ConfigError, IntegrityError, StoreError
from primia.federation.checkpointing import commit_round, resume_point
from primia.federation.coordinator import Selection
from primia.federation.strategy import FedAvg, StrategyState
from primia.store import envelope, manifest
from primia.store import weights as codec
from primia.store.checkpoints import CheckpointStore
from primia.store.keys import KeyRing, init_key_file, load_keyring, rotate_key_file
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring

WHERE = envelope.Location("bucket", "federations/f/rounds/00001/global.safetensors.enc", "f", 1)


@pytest.fixture()
def ring(tmp_path: Path) -> KeyRing:
    return make_keyring(tmp_path)


def test_safetensors_round_trip() -> None:
    w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    out = codec.decode(codec.encode(w))
    assert set(out) == {"a", "b"} and np.array_equal(out["a"], w["a"]) and out["b"].dtype == np.int64
    with pytest.raises(StoreError, match="not a valid safetensors payload"):
        codec.decode(b"\x00" * 20)


def test_seal_open_round_trip_and_fresh_keys(ring: KeyRing) -> None:
    a, b = envelope.seal(b"weights" * 100, ring, WHERE), envelope.seal(b"weights" * 100, ring, WHERE)
    assert a.ciphertext != b.ciphertext and a.header["primia-wrapped-key"] != b.header["primia-wrapped-key"]
    assert b"weights" not in a.ciphertext
    assert envelope.open_sealed(a, ring, WHERE, a.digest()) == b"weights" * 100


def test_any_flipped_byte_is_an_integrity_error(ring: KeyRing) -> None:
    sealed = envelope.seal(os.urandom(300), ring, WHERE)
    for pos in (0, 150, len(sealed.ciphertext) - 1):  # start, middle, inside the GCM tag
        bad = bytearray(sealed.ciphertext)
        bad[pos] ^= 0x01
        with pytest.raises(IntegrityError, match=f"integrity check failed for s3://bucket/{WHERE.key}"):
            envelope.open_sealed(envelope.Sealed(bytes(bad), sealed.header), ring, WHERE, sealed.digest())
    nonce = bytearray(base64.b64decode(sealed.header["primia-nonce"]))
    nonce[0] ^= 1
    header = {**sealed.header, "primia-nonce": base64.b64encode(bytes(nonce)).decode()}
    with pytest.raises(IntegrityError, match="authentication tag"):
        envelope.open_sealed(envelope.Sealed(sealed.ciphertext, header), ring, WHERE, sealed.digest())


def test_other_name_round_or_federation_does_not_decrypt(ring: KeyRing) -> None:
    sealed = envelope.seal(b"x" * 64, ring, WHERE)
    for other in (envelope.Location("bucket", "elsewhere.enc", "f", 1), envelope.Location("bucket", WHERE.key, "g", 1),
                  envelope.Location("bucket", WHERE.key, "f", 2), envelope.Location("b2", WHERE.key, "f", 1)):
        with pytest.raises(IntegrityError, match="written under another name"):
            envelope.open_sealed(sealed, ring, other, sealed.digest())


def test_wrong_and_missing_master_key(ring: KeyRing) -> None:
    sealed = envelope.seal(b"x" * 64, ring, WHERE)
    kid = sealed.header["primia-kid"]
    wrong = KeyRing(keks={kid: b"\x00" * 32}, current=kid)
    with pytest.raises(ConfigError, match=f"master key '{kid}' does not unwrap .* wrong master key"):
        envelope.open_sealed(sealed, wrong, WHERE, sealed.digest())
    with pytest.raises(ConfigError, match=f"master key '{kid}' is not configured"):
        envelope.open_sealed(sealed, KeyRing(keks={"other": b"\x01" * 32}, current="other"), WHERE, sealed.digest())
    with pytest.raises(ConfigError, match="no master key is configured"):
        envelope.seal(b"x", KeyRing(), WHERE)


def test_rotation_and_rewrap(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    init_key_file(path)
    old_ring = load_keyring(CryptoSettings(), tmp_path)
    sealed = envelope.seal(b"payload" * 10, old_ring, WHERE)
    new_kid = rotate_key_file(path)
    ring = load_keyring(CryptoSettings(), tmp_path)
    assert ring.current == new_kid and len(ring.keks) == 2
    assert envelope.open_sealed(sealed, ring, WHERE, sealed.digest()) == b"payload" * 10  # old objects decrypt
    header = envelope.rewrap(sealed.header, ring, WHERE)
    assert header["primia-kid"] == new_kid and header["primia-nonce"] == sealed.header["primia-nonce"]
    only_new = KeyRing(keks={new_kid: ring.keks[new_kid]}, current=new_kid)
    assert envelope.open_sealed(envelope.Sealed(sealed.ciphertext, header), only_new, WHERE,
                                sealed.digest()) == b"payload" * 10


def test_key_file_mode_and_env_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    init_key_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_keyring(CryptoSettings(), tmp_path)
    key = base64.b64encode(b"\x07" * 32).decode()
    ring = load_keyring(CryptoSettings(master_key=f"env-1:{key}", key_file=tmp_path / "none.json"), tmp_path)  # type: ignore[arg-type]
    assert ring.current == "env-1" and ring.keks["env-1"] == b"\x07" * 32
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        load_keyring(CryptoSettings(master_key="k:AAAA", key_file=tmp_path / "none.json"), tmp_path)  # type: ignore[arg-type]


def test_manifest_signature(ring: KeyRing) -> None:
    raw = manifest.sign(manifest.build("f", 3, {"a": {"digest": "00"}}), ring)
    assert manifest.verify(raw, ring.public_key(), "m", "f", 3)["round"] == 3
    doc = json.loads(raw)
    doc["body"]["objects"]["a"]["digest"] = "11"
    with pytest.raises(IntegrityError, match="signature does not verify"):
        manifest.verify(json.dumps(doc).encode(), ring.public_key(), "m", "f", 3)
    with pytest.raises(IntegrityError, match="manifest names federation 'f' round 3"):
        manifest.verify(raw, ring.public_key(), "m", "f", 4)
    intruder = KeyRing(keks=ring.keks, current=ring.current, signing_private=Ed25519PrivateKey.generate(),
                       signing_id="intruder")
    with pytest.raises(IntegrityError, match="signature does not verify"):
        manifest.verify(manifest.sign(manifest.build("f", 3, {}), intruder), ring.public_key(), "m", "f", 3)


def _cfg() -> object:
    return parse_federation_config({"federation_id": "f", "hospitals": [{"name": "a", "data": {"path": "/x"}}],
                                    "test_data": {"path": "/t"}})


def test_rounds_are_visible_only_when_committed(ring: KeyRing) -> None:
    mem = MemoryObjectStore()
    store = CheckpointStore(mem, "f", ring)
    ref = store.put_weights(1, {"x": np.ones(4, dtype=np.float32)})
    assert store.committed_rounds() == [] and store.latest() is None
    store.commit(1, {"global.safetensors": ref})
    assert store.committed_rounds() == [1]
    fresh = CheckpointStore(mem, "f", ring)  # no cache: verify and decrypt from the store
    assert np.array_equal(fresh.get_weights(fresh.latest().ref("global.safetensors"))["x"], np.ones(4))  # type: ignore[union-attr]
    assert fresh.verify_round(1) == ["global.safetensors"]
    assert np.ones(4, dtype=np.float32).tobytes() not in mem.objects[ref.key]


def test_retention_keeps_last_protected_and_pinned(ring: KeyRing) -> None:
    store = CheckpointStore(MemoryObjectStore(), "f", ring)
    for r in range(8):
        store.commit(r, {"global.safetensors": store.put_weights(r, {"x": np.full(2, r, dtype=np.float32)})})
    store.pin(1, "registered model")
    deleted = store.apply_retention(keep_last=3, protect={2})
    assert deleted == [0, 3, 4] and store.committed_rounds() == [1, 2, 5, 6, 7]
    assert not any("/00003/" in k for k in store.store.objects)  # type: ignore[attr-defined]


def test_resume_point_and_config_guard(ring: KeyRing) -> None:
    cfg = _cfg()
    store = CheckpointStore(MemoryObjectStore(), "f", ring)
    assert resume_point(store, cfg) is None  # type: ignore[arg-type]
    sel = Selection()
    sel.offer(0, 0.4, store.put_weights(0, {"x": np.zeros(1, dtype=np.float32)}))
    commit_round(store, cfg, 2, {"x": np.ones(1, dtype=np.float32)}, [], sel, "run-1", FedAvg(),  # type: ignore[arg-type]
                 StrategyState())
    point = resume_point(store, cfg)  # type: ignore[arg-type]
    assert point is not None and point.round == 2 and point.run_id == "run-1"
    assert point.selection.best_round == 0 and point.selection.history == {0: 0.4}
    changed = cfg.model_copy(update={"seed": 99})  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="different config"):
        resume_point(store, changed)
    assert resume_point(store, cfg.model_copy(update={"rounds": 50})) is not None  # type: ignore[attr-defined]


def test_find_object_sees_an_object_written_between_its_two_requests(ring: KeyRing) -> None:
    """Polling readers (secure aggregation's rosters) race writers: a miss followed by 'it exists'
    must read the object, not fail."""

    class Racy(MemoryObjectStore):
        def __init__(self) -> None:
            super().__init__()
            self.pending: tuple[str, bytes, dict[str, str]] | None = None

        def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str]]:
            if self.pending is not None and key == self.pending[0]:
                _, data, meta = self.pending
                self.pending = None
                self.objects[key], self.meta[key] = data, meta  # written just after this miss
                raise StoreError(f"object store: {key} does not exist")
            return super().get_with_metadata(key)

    writer = CheckpointStore(MemoryObjectStore(), "f", ring)
    writer.put_json(1, "roster.json", {"a": 1})
    key = writer.key_for(1, "roster.json")
    racy = Racy()
    racy.pending = (key, writer.store.objects[key], writer.store.meta[key])  # type: ignore[attr-defined]
    assert CheckpointStore(racy, "f", ring).find_json(1, "roster.json") == {"a": 1}
    assert CheckpointStore(MemoryObjectStore(), "f", ring).find_json(1, "roster.json") is None
