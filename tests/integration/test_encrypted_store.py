"""Encrypted checkpoints against the real SeaweedFS S3: integrity, keys, renames, an S3 outage in
the middle of an upload, and no plaintext weights anywhere in the bucket."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from minio.commonconfig import CopySource

from infra import stack
from primia import runtime
from primia.config import CryptoSettings
from primia.errors import ConfigError, IntegrityError
from primia.messages import CheckpointRef
from primia.store import digest as dg
from primia.store import history, manifest
from primia.store.checkpoints import CheckpointStore
from primia.store.keys import KeyRing, load_keyring
from tests.helpers import make_keyring

pytestmark = pytest.mark.integration


def _weights(seed: int, n: int = 50_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(size=n).astype(np.float32), "head.bias": rng.normal(size=7).astype(np.float32)}


@pytest.fixture()
def committed(live_stack: stack.StackState) -> CheckpointStore:
    store = runtime.checkpoints(f"enc-{time.time_ns()}")
    refs = {"global.safetensors": store.put_weights(1, _weights(1)),
            "round.json": store.put_json(1, "round.json", {"round": 1})}
    store.commit(1, refs)
    return store


def test_round_trip_from_the_server(committed: CheckpointStore) -> None:
    fresh = CheckpointStore(committed.store, committed.federation_id, committed.ring)  # nothing cached
    w = fresh.get_weights(fresh.latest().ref("global.safetensors"))  # type: ignore[union-attr]
    assert np.array_equal(w["conv.weight"], _weights(1)["conv.weight"])
    assert fresh.verify_round(1) == ["global.safetensors", "round.json"]
    assert committed.store.versioning_enabled()
    assert dg.algorithm(fresh.latest().ref("global.safetensors").digest) == "blake3"  # type: ignore[union-attr]


def test_a_round_committed_before_blake3_still_loads(committed: CheckpointStore) -> None:
    """Manifests written before digests named their algorithm list each object's bare sha256 under
    "sha256": the read path must hash such an object with sha256, or stored federations stop loading."""
    ref = committed.put_weights(2, _weights(2))
    old = {"bucket": ref.bucket, "key": ref.key, "sha256": hashlib.sha256(committed.store.get(ref.key)).hexdigest()}
    head = committed.head()
    assert head is not None
    body = manifest.build(committed.federation_id, 2, {"global.safetensors": old}, head.manifest, head.counter + 1)
    raw = manifest.sign(body, committed.ring)
    committed.store.put(committed.manifest_key(2), raw)
    committed._write_head(history.Head(2, body["counter"], history.digest(raw)))
    fresh = CheckpointStore(committed.store, committed.federation_id, committed.ring)  # nothing cached
    latest = fresh.resume_round()
    assert latest is not None and latest.ref("global.safetensors").digest == old["sha256"]
    loaded = fresh.get_weights(latest.ref("global.safetensors"))
    assert np.array_equal(loaded["conv.weight"], _weights(2)["conv.weight"])
    assert fresh.verify_round(2) == ["global.safetensors"]


def test_a_flipped_byte_in_any_object_is_caught(committed: CheckpointStore) -> None:
    s3 = committed.store
    keys = [i.key for i in s3.list(committed.round_prefix(1))]
    assert len(keys) == 3  # global, round.json, manifest
    for key in keys:
        data, meta = s3.get_with_metadata(key)
        for pos in (0, len(data) // 2, len(data) - 1):
            bad = bytearray(data)
            bad[pos] ^= 0x40
            s3.put(key, bytes(bad), metadata=meta)
            fresh = CheckpointStore(s3, committed.federation_id, committed.ring)
            with pytest.raises(IntegrityError, match="integrity check failed for s3://") as info:
                fresh.verify_round(1)
            assert key.rsplit("/", 1)[-1] in str(info.value) or "manifest" in str(info.value)
        s3.put(key, data, metadata=meta)  # restore
    assert CheckpointStore(s3, committed.federation_id, committed.ring).verify_round(1)


def test_weights_never_returned_from_a_tampered_object(committed: CheckpointStore) -> None:
    ref = committed.latest().ref("global.safetensors")  # type: ignore[union-attr]
    data, meta = committed.store.get_with_metadata(ref.key)
    committed.store.put(ref.key, data[:-1] + bytes([data[-1] ^ 1]), metadata=meta)
    with pytest.raises(IntegrityError, match=ref.key):
        CheckpointStore(committed.store, committed.federation_id, committed.ring).get_weights(ref)


def test_wrong_or_missing_master_key(committed: CheckpointStore, tmp_path: Path) -> None:
    ref = committed.latest().ref("global.safetensors")  # type: ignore[union-attr]
    stranger = make_keyring(tmp_path)
    with pytest.raises(ConfigError, match="is not configured, but s3://"):
        CheckpointStore(committed.store, committed.federation_id, stranger).get_weights(ref)
    kid = committed.ring.current_kek()[0]
    wrong = KeyRing(keks={kid: b"\x11" * 32}, current=kid, signing_private=committed.ring.signing_private,
                    signing_id="x")
    with pytest.raises(ConfigError, match="wrong master key"):
        CheckpointStore(committed.store, committed.federation_id, wrong).get_weights(ref)


def test_a_renamed_object_does_not_decrypt(committed: CheckpointStore) -> None:
    ref = committed.latest().ref("global.safetensors")  # type: ignore[union-attr]
    new_key = ref.key.replace("global", "stolen")
    committed.store._client.copy_object(committed.store.bucket, new_key, CopySource(committed.store.bucket, ref.key))
    moved = CheckpointRef(ref.bucket, new_key, ref.digest, ref.round)
    with pytest.raises(IntegrityError, match="written under another name"):
        CheckpointStore(committed.store, committed.federation_id, committed.ring).get_weights(moved)


def test_rotate_then_rewrap_then_old_key_gone(live_stack: stack.StackState, tmp_path: Path) -> None:
    old = make_keyring(tmp_path)
    store = CheckpointStore(runtime.object_store(), f"rot-{time.time_ns()}", old)
    store.commit(1, {"global.safetensors": store.put_weights(1, _weights(2))})
    before = {i.key: i.etag for i in store.store.list(store.prefix)}
    from primia.store.keys import rotate_key_file

    new_kid = rotate_key_file(tmp_path / "keys" / "keyring.json")
    ring = load_keyring(CryptoSettings(), tmp_path)
    rotated = CheckpointStore(store.store, store.federation_id, ring)
    changed, removed = rotated.rewrap_all()
    assert changed == 1 and removed >= 1 and rotated.rewrap_all() == (0, 0)
    after = {i.key: i.etag for i in store.store.list(store.prefix)}
    assert before == after, "payloads (ETags) must not change on re-wrap"
    only_new = KeyRing(keks={new_kid: ring.keks[new_kid]}, current=new_kid, signing_private=ring.signing_private,
                       signing_id=ring.signing_id)
    assert CheckpointStore(store.store, store.federation_id, only_new).verify_round(1)
    # the copy onto itself made a new version: the old one (wrapped under the retired key) is gone too
    versions = [i for i in store.store.list(store.prefix, versions=True) if i.key.endswith(".enc")]
    assert len(versions) == 1
    assert store.store.metadata(versions[0].key)["primia-kid"] == new_kid
    assert "primia-sha256-plain" not in store.store.metadata(versions[0].key)  # no plaintext digest in metadata


@pytest.mark.slow
def test_s3_down_for_15s_mid_upload_commits_once(live_stack: stack.StackState) -> None:
    home = Path(live_stack.home)
    store = runtime.checkpoints(f"outage-{time.time_ns()}")
    big = _weights(3, n=12_000_000)  # ~48 MB: the upload is in flight when the server dies
    outcome: dict[str, object] = {}
    seen: list[list[int]] = []

    def writer() -> None:
        try:
            ref = store.put_weights(1, big)
            outcome["committed"] = store.commit(1, {"global.safetensors": ref})
        except Exception as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.4)
    stack.kill_s3(home)
    killed_at = time.monotonic()
    time.sleep(15)
    stack.start_s3(home)
    while thread.is_alive():  # readers see nothing or the whole round, never part of it
        try:
            rounds = store.committed_rounds()
        except Exception:
            continue
        seen.append(rounds)
        for r in rounds:
            store.verify_round(r)
        time.sleep(0.2)
    thread.join()
    assert "error" not in outcome, outcome.get("error")
    assert time.monotonic() - killed_at >= 15
    versions = [i for i in store.store.list(store.manifest_key(1), versions=True)]
    assert len(versions) == 1, "the round must commit exactly once"
    fresh = CheckpointStore(store.store, store.federation_id, store.ring)
    assert np.array_equal(fresh.get_weights(fresh.latest().ref("global.safetensors"))["conv.weight"],  # type: ignore[union-attr]
                          big["conv.weight"])
