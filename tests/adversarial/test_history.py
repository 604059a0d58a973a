"""A coordinator's history that was cut back, rolled back or forged is refused on resume, naming the
round, instead of quietly restarting from an older round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from primia.errors import IntegrityError
from primia.store import history, manifest
from primia.store.checkpoints import CheckpointStore
from primia.store.keys import KeyRing
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring


def _committed(tmp_path: Path, rounds: int = 4) -> CheckpointStore:
    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path), memory=history.Memory(tmp_path / "m"))
    for r in range(rounds):
        store.commit(r, {"global.safetensors": store.put_weights(r, {"w": np.full(3, float(r))})})
    return store


def test_an_intact_history_resumes_from_the_newest_round(tmp_path: Path) -> None:
    store = _committed(tmp_path)
    assert store.resume_round().round == 3  # type: ignore[union-attr]
    bodies = [store.load_round(r).manifest for r in range(4)]
    assert [b["counter"] for b in bodies] == [1, 2, 3, 4] and bodies[0]["previous"] is None


def test_deleting_the_newest_manifests_is_refused_naming_the_round(tmp_path: Path) -> None:
    store = _committed(tmp_path)
    for r in (3, 2):
        store.store.remove_all_versions(store.manifest_key(r))
    with pytest.raises(IntegrityError, match="round 3, which the signed head names, has no manifest: the newest "
                                             "rounds were deleted"):
        store.resume_round()


def test_an_older_head_restored_is_refused(tmp_path: Path) -> None:
    store = _committed(tmp_path, 2)
    old_head = store.store.get(store.head_key)
    store.commit(2, {"global.safetensors": store.put_weights(2, {"w": np.zeros(3)})})
    store.store.remove_all_versions(store.manifest_key(2))
    store.store.put(store.head_key, old_head)  # a bucket version from before round 2
    with pytest.raises(IntegrityError, match="older than commit 3 this coordinator wrote: the history went backwards"):
        store.resume_round()


def test_a_missing_head_or_a_broken_chain_is_refused(tmp_path: Path) -> None:
    store = _committed(tmp_path, 3)
    ring: KeyRing = store.ring
    body = store.load_round(1).manifest | {"previous": "0" * 64}  # re-signed (with the coordinator's own key)
    store.store.put(store.manifest_key(1), manifest.sign(body, ring))
    with pytest.raises(IntegrityError, match="the chain is broken at round 2 .its manifest does not name round 1.s"):
        store.resume_round()
    store.store.remove_all_versions(store.head_key)
    with pytest.raises(IntegrityError, match="the signed head is missing"):
        store.resume_round()


def test_a_head_or_manifest_forged_with_a_hospitals_key_is_refused(tmp_path: Path) -> None:
    """A hospital can write no manifest or head in the coordinator's bucket (its S3 identity; see the
    least-privilege matrix) - and one signed with a hospital's key would not verify anyway."""
    store = _committed(tmp_path, 2)
    hospital = make_keyring(tmp_path / "hospital")  # another signing key
    forged = manifest.sign(manifest.build("fed", 2, {}, history.digest(store.store.get(store.manifest_key(1))), 3),
                           hospital)
    store.store.put(store.manifest_key(2), forged)
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        store.resume_round()
    store.store.remove_all_versions(store.manifest_key(2))
    _, key = hospital.signer()
    store.store.put(store.head_key, history.sign_head(history.Head(1, 9, "x"), "fed", key))
    with pytest.raises(IntegrityError, match="the head is not signed by the coordinator's key"):
        store.resume_round()


def test_a_commit_whose_head_was_lost_in_a_crash_is_completed(tmp_path: Path) -> None:
    store = _committed(tmp_path, 2)
    head = store.store.get(store.head_key)
    store.commit(2, {"global.safetensors": store.put_weights(2, {"w": np.zeros(3)})})
    store.store.put(store.head_key, head)  # the coordinator died between the manifest and the head
    (tmp_path / "m" / "fed.json").write_text(json.dumps({"round": 1, "counter": 2, "manifest": "x"}))
    assert store.resume_round().round == 2  # type: ignore[union-attr]
    assert store.head().round == 2  # type: ignore[union-attr]


def test_a_failed_resume_does_not_lower_what_the_coordinator_remembers(tmp_path: Path) -> None:
    """Cut the history back (delete rounds 3-5, restore round 1's head from a bucket version): the resume
    is refused - and so is the next one; the refused attempt must not 'repair' the head or forget the
    newest commit."""
    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path), memory=history.Memory(tmp_path / "m"))
    heads = {}
    for r in range(6):
        store.commit(r, {"global.safetensors": store.put_weights(r, {"w": np.full(3, float(r))})})
        heads[r] = store.store.get(store.head_key)
    for r in (5, 4, 3):
        store.store.remove_all_versions(store.manifest_key(r))
    store.store.put(store.head_key, heads[1])
    for _ in range(2):
        with pytest.raises(IntegrityError, match="older than commit 6 this coordinator wrote"):
            store.resume_round()
    assert store.memory is not None and store.memory.counter("fed") == 6
    assert store.store.get(store.head_key) == heads[1]  # nothing was "repaired"
