"""Weights codec and checkpoint store logic over an in-memory object store (unit level)."""

from __future__ import annotations

import numpy as np
import pytest

from primia.errors import StoreError
from primia.messages import CheckpointRef
from primia.store import weights as codec
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore


def test_safetensors_round_trip() -> None:
    w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    out = codec.decode(codec.encode(w))
    assert set(out) == {"a", "b"} and np.array_equal(out["a"], w["a"]) and out["b"].dtype == np.int64


def test_decode_rejects_garbage() -> None:
    with pytest.raises(StoreError, match="not a valid safetensors payload"):
        codec.decode(b"\x00" * 20)


def test_checkpoint_layout_and_sha_check() -> None:
    mem = MemoryObjectStore()
    store = CheckpointStore(mem, "fed")
    ref = store.put_weights(3, {"x": np.ones(4, dtype=np.float32)}, hospital="h1")
    assert ref.key == "federations/fed/rounds/00003/updates/h1.safetensors" and ref.round == 3
    fresh = CheckpointStore(mem, "fed")  # no cache: reads from the store and verifies
    assert np.array_equal(fresh.get_weights(ref)["x"], np.ones(4))
    mem.objects[ref.key] = mem.objects[ref.key][:-1] + b"\x01"
    with pytest.raises(StoreError, match="failed its sha256 check"):
        CheckpointStore(mem, "fed").get_weights(ref)
    with pytest.raises(StoreError, match="expected test-bucket"):
        fresh.get_weights(CheckpointRef("other", ref.key, ref.sha256, 3))
