"""The parties' link: mutual authentication against roster keys, encrypted frames, clear failures."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.smpc.link import Identity, Link, LinkError, handshake

KEYS = {n: Ed25519PrivateKey.generate() for n in ("model-owner", "data-owner", "dealer")}
ROSTER = {n: k.public_key() for n, k in KEYS.items()}


def _pair(left: Identity, right: Identity, roster: Any = ROSTER, expect: tuple[str, str] = ("data-owner",
                                                                                           "model-owner"),
          timeout_s: float = 5.0) -> tuple[Any, Any]:
    a, b = socket.socketpair()
    out: dict[str, Any] = {}

    def run(key: str, fn: Callable[[], Link]) -> None:
        try:
            out[key] = fn()
        except LinkError as exc:
            out[key] = exc

    t = threading.Thread(target=run, args=("b", lambda: handshake(b, right, roster, expect[1], False, timeout_s)))
    t.start()
    run("a", lambda: handshake(a, left, roster, expect[0], True, timeout_s))
    t.join()
    return out["a"], out["b"]


def me(name: str, key: Ed25519PrivateKey | None = None) -> Identity:
    return Identity(name, key or KEYS[name])


def test_authenticated_parties_exchange_tensors_and_messages() -> None:
    a, b = _pair(me("model-owner"), me("data-owner"))
    assert isinstance(a, Link) and isinstance(b, Link)
    x = torch.arange(-5, 5, dtype=torch.int64).reshape(2, 5) * (2**60)
    a.send("shares", {"step": 3}, [x, torch.zeros(0, dtype=torch.int64)])
    kind, body, tensors = b.recv("shares")
    assert kind == "shares" and body == {"step": 3} and torch.equal(tensors[0], x) and tensors[1].numel() == 0


def test_the_wire_carries_no_plain_tensor() -> None:
    a, b = socket.socketpair()
    seen = bytearray()
    left, right = socket.socketpair()  # a relay that records what crosses

    def relay(src: socket.socket, dst: socket.socket) -> None:
        while data := src.recv(65536):
            seen.extend(data)
            dst.sendall(data)

    for s, d in ((b, left), (left, b)):
        threading.Thread(target=relay, args=(s, d), daemon=True).start()
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", handshake(right, me("data-owner"), ROSTER,
                                                                       "model-owner", False)))
    t.start()
    link = handshake(a, me("model-owner"), ROSTER, "data-owner", True)
    t.join()
    secret = torch.full((1000,), 0x1234567890ABCDEF, dtype=torch.int64)
    link.send("shares", {}, [secret])
    assert torch.equal(out["r"].recv()[2][0], secret)
    assert secret.numpy().tobytes()[:64] not in bytes(seen)


def test_a_key_that_is_not_the_roster_key_is_refused() -> None:
    a, b = _pair(me("model-owner", Ed25519PrivateKey.generate()), me("data-owner"))
    assert isinstance(b, LinkError) and "did not prove its roster identity" in str(b)
    assert isinstance(a, LinkError) and "your signature does not verify" in str(a)


def test_a_party_that_names_itself_otherwise_or_is_not_on_the_roster_is_refused() -> None:
    a, b = _pair(me("dealer"), me("data-owner"))
    assert isinstance(b, LinkError) and "says it is 'dealer'" in str(b)
    a, b = _pair(me("model-owner"), me("data-owner"), roster={"data-owner": ROSTER["data-owner"]})
    assert isinstance(b, LinkError) and "not a party of the federation's signed roster" in str(b)
    assert isinstance(a, LinkError) and "data-owner disconnected" in str(a)  # at once, not at its timeout


def test_an_altered_frame_ends_the_session() -> None:
    a, b = _pair(me("model-owner"), me("data-owner"))
    a.sock.sendall(struct.pack(">I", 40) + bytes(40))  # a frame not made with the key
    with pytest.raises(LinkError, match="failed authentication"):
        b.recv()


def test_a_reason_given_a_disconnect_and_silence_are_clear_errors() -> None:
    a, b = _pair(me("model-owner"), me("data-owner"), timeout_s=1.0)
    a.fail("the model is not in the registry")
    with pytest.raises(LinkError, match="model-owner ended the session: the model is not in the registry"):
        b.recv()
    a, b = _pair(me("model-owner"), me("data-owner"), timeout_s=1.0)
    a.close()
    with pytest.raises(LinkError, match="model-owner disconnected"):
        b.recv()
    a, b = _pair(me("model-owner"), me("data-owner"), timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(LinkError, match="model-owner sent nothing for 0.5 s"):
        b.recv()
    assert time.monotonic() - started < 3


def test_before_it_proves_its_key_a_peer_cannot_make_us_read_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An impostor may finish the key exchange under a roster name; what it sends before its signature is
    checked must not be parsed into allocations (here a tensor of 2^64 elements, which numpy's product
    wrapped to 0)."""
    real_send = Link.send

    def send(self: Link, kind: str, body: Any = None, tensors: Any = None) -> None:
        if kind == "auth" and threading.current_thread().name == "impostor":
            header = {"kind": "auth", "body": dict(body or {}), "tensors": [["int64", [2**32, 2**32]]]}
            raw = json.dumps(header).encode()
            return self._frame_out(struct.pack(">I", len(raw)) + raw)
        return real_send(self, kind, body, tensors)

    monkeypatch.setattr(Link, "send", send)
    a, b = socket.socketpair()
    out: dict[str, Any] = {}

    def impostor() -> None:
        try:
            handshake(b, me("model-owner", Ed25519PrivateKey.generate()), ROSTER, "data-owner", False, 5.0)
        except LinkError as exc:
            out["impostor"] = exc

    t = threading.Thread(target=impostor, name="impostor")
    t.start()
    with pytest.raises(LinkError, match="sent tensors before it proved its roster identity"):
        handshake(a, me("data-owner"), ROSTER, "model-owner", True, 5.0)
    t.join()
    assert a.fileno() == -1  # closed, the impostor is not left holding it


def test_a_peer_that_trickles_its_handshake_is_cut_off_at_the_timeout() -> None:
    a, b = socket.socketpair()

    def trickle() -> None:
        for byte in struct.pack(">I", 60) + b"{" * 60:
            try:
                b.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(LinkError, match="did not complete the handshake within 1 s"):
        handshake(a, me("data-owner"), ROSTER, "model-owner", True, 1.0)
    assert time.monotonic() - started < 3
