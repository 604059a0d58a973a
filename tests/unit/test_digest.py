"""Object digests: BLAKE3 for what is written now, sha256 still read for what was written before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from primia.errors import IntegrityError
from primia.messages import CheckpointRef
from primia.store import digest as dg
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring

# BLAKE3's published test vector for "abc"; sha256's from FIPS 180-2
BLAKE3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_known_answers_in_both_forms() -> None:
    assert dg.of(b"abc") == f"blake3:{BLAKE3_ABC}"
    assert dg.of(b"abc", like=SHA256_ABC) == SHA256_ABC  # a legacy digest is compared in its own algorithm
    h = dg.Hasher()
    for part in (b"a", b"b", b"c"):
        h.update(memoryview(part))
    assert h.value() == dg.of(b"abc")


@pytest.mark.parametrize("bad", ["", "0" * 63, "A" * 64, "md5:" + "0" * 64, "sha256:" + "0" * 64,
                                 "blake3:" + "0" * 63, "blake3:" + "0" * 64 + "\n", "BLAKE3:" + "0" * 64])
def test_a_digest_we_cannot_verify_is_refused(bad: str) -> None:
    with pytest.raises(IntegrityError, match="is not 'blake3:<64 hex>' or a legacy sha256"):
        dg.algorithm(bad)
    with pytest.raises(IntegrityError):
        dg.Hasher(bad)


def test_entries_name_their_digest_and_old_entries_still_read() -> None:
    new = {"digest": f"blake3:{BLAKE3_ABC}", "sha256": "ignored when digest is there"}
    assert dg.from_entry(new) == new["digest"]
    assert dg.from_entry({"sha256": SHA256_ABC}) == SHA256_ABC
    assert dg.from_entry({"primia.checkpoint.sha256": SHA256_ABC}, "primia.checkpoint.") == SHA256_ABC
    for bad in ({}, {"digest": 7}, {"digest": "md5:" + "0" * 64}):
        with pytest.raises(IntegrityError):
            dg.from_entry(bad)


def test_objects_are_written_with_blake3_and_old_sha256_references_still_load(tmp_path: Path) -> None:
    store = CheckpointStore(MemoryObjectStore("b"), "f", make_keyring(tmp_path))
    ref = store.put_object(1, "global.safetensors", b"weights" * 1000)
    stored = store.store.get(ref.key)
    assert ref.digest == dg.of(stored) and dg.algorithm(ref.digest) == "blake3"
    fresh = CheckpointStore(store.store, "f", store.ring)  # no cache: the read path
    legacy = CheckpointRef(ref.bucket, ref.key, hashlib.sha256(stored).hexdigest(), 1)
    assert bytes(fresh.get_object(legacy)) == b"weights" * 1000
    for wrong in (CheckpointRef(ref.bucket, ref.key, "0" * 64, 1),
                  CheckpointRef(ref.bucket, ref.key, "blake3:" + "0" * 64, 1)):
        with pytest.raises(IntegrityError, match="ciphertext digest does not match"):
            CheckpointStore(store.store, "f", store.ring).get_object(wrong)


def test_a_reference_naming_one_object_with_anothers_digest_is_refused(tmp_path: Path) -> None:
    """The plaintext cache is keyed by the whole reference: a digest alone must not fetch another object's
    plaintext past the location the encryption binds (a hospital could sign a peer's vector digest)."""
    store = CheckpointStore(MemoryObjectStore("b"), "f", make_keyring(tmp_path))
    mine = store.put_object(1, "updates/a", b"A" * 1000)
    theirs = store.put_object(1, "updates/b", b"B" * 1000)
    with pytest.raises(IntegrityError, match="ciphertext digest does not match"):
        store.get_object(CheckpointRef(mine.bucket, mine.key, theirs.digest, 1))
    assert bytes(store.get_object(mine)) == b"A" * 1000
