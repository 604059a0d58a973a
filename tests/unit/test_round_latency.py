"""What makes a round cheap without weakening it: a waiter wakes when a party in this process posts (not at
its next poll), and checkpoints are sealed part by part as the upload reads them, into the very bytes of a
one-piece seal."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from primia.errors import IntegrityError
from primia.secure.protocol import Params
from primia.secure.transport import Channel
from primia.store import digest as dg
from primia.store import envelope
from primia.store.checkpoints import CheckpointStore
from primia.store.s3 import _Reader
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring


def test_a_post_in_this_process_wakes_the_waiter_at_once(tmp_path: Path) -> None:
    store = CheckpointStore(MemoryObjectStore("b"), "fed", make_keyring(tmp_path))
    channel = Channel(store, lambda _: store, Params("fed", 1, "sess", ("a", "b"), 4), poll_s=30.0)
    threading.Timer(0.2, lambda: channel.post("advertise", "b", {"x": 1})).start()
    started = time.monotonic()
    got = channel.collect("advertise", {"b"}, time.monotonic() + 60, lambda: set())
    assert got == {"b": {"x": 1}} and time.monotonic() - started < 5  # not the 30 s poll


def test_checkpoints_sealed_as_the_upload_reads_them_are_the_one_piece_bytes(tmp_path: Path) -> None:
    ring = make_keyring(tmp_path)
    where = envelope.Location("b", "k", "fed", 1)
    plain = bytes(range(256)) * 4000 + b"tail"
    stream = envelope.SealingStream(plain, ring, where)
    with pytest.raises(IntegrityError, match="never read to its end"):
        stream.digest()
    key = envelope._data_key(stream.header, ring, where)  # the known answer: one-piece AES-GCM, same key
    nonce = base64.b64decode(stream.header["primia-nonce"])
    expected = AESGCM(key).encrypt(nonce, plain, where.aad())
    for sizes in ([len(plain) + 16], [5, 1 << 19, len(plain)], [len(plain) - 3, 10, 2, 100], [len(plain) + 5]):
        reader, parts = stream.reader(), []  # a fresh reader per attempt, as a retried upload asks
        for size in sizes:
            parts.append(reader.read(size))
        parts.append(reader.read())
        assert b"".join(parts) == expected and reader.read(10) == b""
    assert stream.digest() == dg.of(expected) and len(stream) == len(expected)
    assert envelope.open_sealed(envelope.Sealed(expected, stream.header), ring, where, stream.digest()) == plain


def test_checkpoints_stay_their_own_through_the_store(tmp_path: Path) -> None:
    store = CheckpointStore(MemoryObjectStore("b"), "fed", make_keyring(tmp_path))
    first, second = bytes(range(256)) * 4096, b"\x07" * (256 * 4096 - 5)
    refs = [store.put_object(1, "one", first), store.put_object(1, "two", second)]
    fresh = CheckpointStore(store.store, "fed", store.ring)  # no plaintext cache: read back and decrypt
    assert fresh.get_object(refs[0]) == first and fresh.get_object(refs[1]) == second


def test_the_upload_reader_returns_bytes_part_by_part() -> None:
    reader = _Reader(memoryview(bytearray(b"abcdefgh")))
    assert [reader.read(3), reader.read(3), reader.read(3), reader.read(3)] == [b"abc", b"def", b"gh", b""]
    assert _Reader(b"xyz").read() == b"xyz"


def test_a_party_that_posted_and_then_ended_is_not_lost(tmp_path: Path) -> None:
    """Who stopped is read before the listing: a message posted just before its sender's run ended counts
    (with 20 embedded hospitals, unmask messages were lost this way and the round aborted)."""
    store = CheckpointStore(MemoryObjectStore("b"), "fed", make_keyring(tmp_path))
    channel = Channel(store, lambda _: store, Params("fed", 1, "sess", ("a", "b"), 4), poll_s=0.01)

    def gone() -> set[str]:  # b posts, then its run ends - between the coordinator's two reads
        if channel.read("unmask", "b") is None:
            channel.post("unmask", "b", {"shares": 1})
        return {"b"}

    assert channel.collect("unmask", {"b"}, time.monotonic() + 5, gone) == {"b": {"shares": 1}}


def test_posts_are_announced_and_an_announcement_wakes_the_wait_before_its_poll(tmp_path: Path) -> None:
    """Distributed mode: a roster written by another process is found when its announcement arrives (here
    after 0.2 s), not at the next poll (30 s away); an announcer that fails does not fail the post."""
    from primia.secure import transport
    from primia.secure.agreement import b64
    from primia.signing import canonical_json

    store = CheckpointStore(MemoryObjectStore("b"), "fed", make_keyring(tmp_path))
    params = Params("fed", 1, "sess", ("a", "b"), 4)
    told: list[tuple[str, str, str]] = []

    def announce(kind: str, federation: str, session: str) -> None:
        told.append((kind, federation, session))
        raise RuntimeError("the event server is down")

    transport.announce_with(announce)
    try:
        channel = Channel(store, lambda _: store, params, poll_s=30.0)
        channel.post("advertise", "a", {"x": 1})
        channel.publish("advertise", {"members": ["a", "b"]}, store.ring.signer()[1].sign)
        assert told == [("message", "fed", "sess"), ("roster", "fed", "sess")]
    finally:
        transport.announce_with(None)
    # the coordinator's next roster, written as another process would: straight to the store, no bump here
    payload = channel._roster_payload("share", {"members": ["a", "b"]})
    signature = store.ring.signer()[1].sign(canonical_json(payload))
    threading.Timer(0.2, lambda: (store.put_json(1, f"{channel.base}/rosters/share.json",
                                                 {"payload": payload, "signature": b64(signature)}),
                                  transport.woken("roster"))).start()
    started = time.monotonic()
    public = store.ring.public_key()
    roster = channel.await_roster("share", time.monotonic() + 10, lambda m, s: public.verify(s, m) is None)
    assert roster["members"] == ["a", "b"] and time.monotonic() - started < 5
