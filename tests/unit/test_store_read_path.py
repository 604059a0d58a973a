"""The checkpoint read path at memory speed: hashed while downloading, decrypted in place, decoded by
our own safetensors reader. Each against known answers (the safetensors library, a plain open)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as library_load

from primia.errors import IntegrityError, StoreError
from primia.store import digest as dg
from primia.store import envelope
from primia.store import weights as codec
from primia.store.keys import KeyRing
from tests.helpers import make_keyring

WHERE = envelope.Location("bucket", "federations/f/rounds/00001/global.safetensors.enc", "f", 1)


@pytest.fixture()
def ring(tmp_path: Path) -> KeyRing:
    return make_keyring(tmp_path)


def test_the_reader_agrees_with_the_safetensors_library_on_every_dtype() -> None:
    rng = np.random.default_rng(0)
    w = {f"t{d}": (rng.normal(size=(3, 4)) * 50).astype(d) for d in
         ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "<u8", "<u4", "<u2", "u1", "?")}
    w["empty"], w["scalar"] = np.zeros((0, 5), np.float32), np.array(7, np.int64)
    data = codec.encode(w, metadata={"round": "3"})
    ours, theirs = codec.decode(memoryview(data).toreadonly()), library_load(data)
    assert set(ours) == set(theirs) == set(w)
    for k in w:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
        assert np.array_equal(ours[k], theirs[k])
        assert ours[k].flags.writeable and ours[k].flags.owndata  # copies: the buffer may be a cached plaintext


def _payload(header: dict[str, object], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize(("header", "body", "fault"), [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "bytes for shape"),
    ({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0" * 2, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "not a list of at most 64 sizes"),
    ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
      "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"\0" * 3, "overlap or leave holes"),
    ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 3, "belong to no tensor"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [2, 1]}}, b"\0" * 3, "outside"),
])
def test_a_malformed_payload_is_refused_naming_the_fault(header: dict[str, object], body: bytes, fault: str) -> None:
    with pytest.raises(StoreError, match=f"round 4 global is not a valid safetensors payload: .*{fault}"):
        codec.decode(_payload(header, body), what="round 4 global")


def test_a_hostile_header_is_refused_quickly_with_a_clear_error() -> None:
    import time

    start = time.perf_counter()
    for header, fault in (({"a": {"dtype": "U8", "shape": [2] * 200_000, "data_offsets": [0, 1]}}, "at most 64"),
                          ({"a": {"dtype": "U8", "shape": [10**9] * 60, "data_offsets": [0, 1]}}, "bytes for shape"),
                          ({"a": 1}, "not a JSON object"), ({"a": {"dtype": "U8", "shape": [True],
                                                                "data_offsets": [0, 1]}}, "sizes")):
        with pytest.raises(StoreError, match=fault):
            codec.decode(_payload(header, b"\0"))
    nested = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(StoreError, match="nests too deep|not a valid"):
        codec.decode(struct.pack("<Q", len(nested)) + nested)
    assert time.perf_counter() - start < 2.0


def test_a_header_length_past_the_end_or_a_non_object_header_is_refused() -> None:
    with pytest.raises(StoreError, match="runs past"):
        codec.decode(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(StoreError, match="not a JSON object"):
        codec.decode(_payload([1, 2], b""))  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="shorter than the 8-byte"):
        codec.decode(b"\0\0")


def _downloaded(sealed: envelope.Sealed) -> tuple[bytearray, str]:
    data = bytes(sealed.ciphertext)
    return bytearray(data), dg.of(data)


def test_in_place_decryption_gives_the_plaintext_read_only(ring: KeyRing) -> None:
    plain = os.urandom(100_000)
    sealed = envelope.seal(plain, ring, WHERE)
    buf, digest = _downloaded(sealed)
    out = envelope.open_downloaded(buf, sealed.header, digest, ring, WHERE, sealed.digest())
    assert out == plain and out.readonly
    assert out == envelope.open_sealed(sealed, ring, WHERE, sealed.digest())  # the known answer


def test_in_place_a_flipped_byte_fails_and_leaves_nothing_behind(ring: KeyRing) -> None:
    sealed = envelope.seal(os.urandom(3000), ring, WHERE)
    for pos in (0, 1500, len(sealed.ciphertext) - 1):
        buf, digest = _downloaded(sealed)
        buf[pos] ^= 1
        with pytest.raises(IntegrityError, match="ciphertext digest does not match"):
            envelope.open_downloaded(buf, sealed.header, dg.of(buf), ring, WHERE,
                                     sealed.digest())
        buf, digest = _downloaded(sealed)
        buf[pos] ^= 1
        keep = memoryview(buf)  # a view that outlives the call sees what stayed in the memory
        with pytest.raises(BufferError):  # (it also keeps the buffer from being emptied)
            envelope.open_downloaded(buf, sealed.header, dg.of(buf), ring, WHERE, None)
        assert not any(keep)  # the unauthenticated plaintext was zeroed before anything else
        keep.release()
        buf, _ = _downloaded(sealed)
        buf[pos] ^= 1
        with pytest.raises(IntegrityError, match="authentication tag"):  # no manifest digest to compare
            envelope.open_downloaded(buf, sealed.header, dg.of(buf), ring, WHERE, None)
        assert len(buf) == 0


def test_in_place_the_download_digest_is_checked_against_the_reference(ring: KeyRing) -> None:
    sealed = envelope.seal(b"x" * 500, ring, WHERE)
    buf, _ = _downloaded(sealed)
    with pytest.raises(IntegrityError, match="ciphertext digest does not match"):  # a stale or swapped object
        envelope.open_downloaded(buf, sealed.header, "0" * 64, ring, WHERE, sealed.digest())


def test_a_download_size_the_server_gets_wrong_is_a_clear_error() -> None:
    from primia.store.s3 import MAX_DOWNLOAD, _announced_size

    assert _announced_size("45000000", "s3://b/k") == 45_000_000
    for bad, fault in ((None, "without a valid Content-Length"), ("12x", "without a valid Content-Length"),
                       ("-1", "outside"), (str(MAX_DOWNLOAD + 1), "outside")):
        with pytest.raises(StoreError, match=f"s3://b/k .*{fault}"):
            _announced_size(bad, "s3://b/k")
