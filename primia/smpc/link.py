"""An authenticated, encrypted link between two parties of encrypted inference, keyed by their roster keys.

Handshake (SIGMA-style, like Noise's XX with signatures): each side sends its name and a fresh X25519 key;
both derive two AES-256-GCM keys (one per direction) with HKDF over the shared secret, salted with the hash of
both opening messages; each then signs that hash with its Ed25519 identity key, encrypted under its key, and
checks the other's signature against the key the federation's signed roster gives for the name it expects.
A man in the middle would have to sign as a roster party; a replayed opening fails on the fresh X25519 keys.

Frames: a 4-byte length, then AES-GCM under a per-direction counter nonce (a dropped, repeated or reordered
frame fails to decrypt). A message is a JSON header plus raw tensor bytes. A party that fails sends the other
an error frame with the reason before it closes; a peer that disappears or stays silent past the timeout is
a `LinkError` naming it, never a hang.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from primia.errors import PrimiaError

LABEL = b"primia-smpc-link-v1"
MAX_FRAME = 1 << 30  # one frame; larger messages are split
MAX_TENSOR = 1 << 34  # bytes in one announced tensor (16 GiB: far above ResNet-18's largest at 224x224)
HANDSHAKE_FRAME = 4096  # until the peer has proven its roster key: no tensors, no large frames
CHUNK = 64 << 20


class LinkError(PrimiaError):
    """The link to a party failed: it disconnected, timed out, failed authentication or ended the session."""


@dataclass(frozen=True)
class Identity:
    name: str
    key: Ed25519PrivateKey


class Link:
    def __init__(self, sock: socket.socket, peer: str, send_key: bytes, recv_key: bytes, timeout_s: float) -> None:
        self.sock, self.peer, self.timeout_s = sock, peer, timeout_s
        self.max_frame = MAX_FRAME
        self.deadline: float | None = None  # monotonic: the handshake's whole budget, however slow the bytes
        self._send, self._recv = AESGCM(send_key), AESGCM(recv_key)
        self._n_send = self._n_recv = 0
        self.bytes_sent = self.bytes_received = 0
        sock.settimeout(timeout_s)
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # a round is a small message each way: without
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # this, Nagle + delayed ACK add 40 ms

    # ------------------------------------------------------------------ frames
    def _frame_out(self, plain: bytes) -> None:
        nonce = struct.pack(">4xQ", self._n_send)
        self._n_send += 1
        data = self._send.encrypt(nonce, plain, None)
        self._sendall(struct.pack(">I", len(data)) + data)

    def _frame_in(self) -> bytes:
        (size,) = struct.unpack(">I", self._exact(4))
        if size > self.max_frame + 16:
            raise LinkError(f"{self.peer} sent a frame of {size} bytes (at most {self.max_frame}): refused")
        nonce = struct.pack(">4xQ", self._n_recv)
        self._n_recv += 1
        try:
            return self._recv.decrypt(nonce, self._exact(size), None)
        except InvalidTag:
            raise LinkError(f"a frame from {self.peer} failed authentication (altered, replayed or out of order)") \
                from None

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise LinkError(f"{self.peer} did not take our message within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise LinkError(f"{self.peer} disconnected ({exc.strerror or type(exc).__name__})") from None
        self.bytes_sent += len(data)

    def _exact(self, n: int) -> bytes:
        buf, got = bytearray(n), 0
        view = memoryview(buf)
        while got < n:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise LinkError(f"{self.peer} did not complete the handshake within {self.timeout_s:g} s")
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                raise LinkError(f"{self.peer} sent nothing for {self.timeout_s:g} s: giving up") from None
            except OSError as exc:
                raise LinkError(f"{self.peer} disconnected ({exc.strerror or type(exc).__name__})") from None
            if k == 0:
                raise LinkError(f"{self.peer} disconnected")
            got += k
        self.bytes_received += n
        return bytes(buf)

    # ------------------------------------------------------------------ messages
    def send(self, kind: str, body: Mapping[str, Any] | None = None, tensors: list[torch.Tensor] | None = None) -> None:
        tensors = tensors or []
        header = {"kind": kind, "body": dict(body or {}),
                  "tensors": [[str(t.dtype).removeprefix("torch."), list(t.shape)] for t in tensors]}
        raw = json.dumps(header).encode()
        self._frame_out(struct.pack(">I", len(raw)) + raw)
        for t in tensors:
            data = t.detach().contiguous().numpy().tobytes()
            for i in range(0, len(data), CHUNK):
                self._frame_out(data[i:i + CHUNK])

    def recv(self, expect: str | None = None) -> tuple[str, dict[str, Any], list[torch.Tensor]]:
        first = self._frame_in()
        try:
            (size,) = struct.unpack(">I", first[:4])
            header = json.loads(first[4:4 + size])
            kind, body, specs = str(header["kind"]), dict(header["body"]), list(header["tensors"])
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise LinkError(f"{self.peer} sent a message that does not parse ({type(exc).__name__})") from None
        if kind == "error":
            raise LinkError(f"{self.peer} ended the session: {body.get('reason', 'no reason given')}")
        if expect is not None and kind != expect:  # before anything it announces is read or allocated
            raise LinkError(f"{self.peer} sent {kind!r} where {expect!r} was due")
        if specs and self.max_frame <= HANDSHAKE_FRAME:
            raise LinkError(f"{self.peer} sent tensors before it proved its roster identity: refused")
        return kind, body, [self._tensor(spec) for spec in specs]

    def _tensor(self, spec: Any) -> torch.Tensor:
        try:
            dtype, shape = spec
            ok = dtype in ("int64", "float64", "float32") and isinstance(shape, list) and len(shape) <= 8 \
                and all(type(d) is int and 0 <= d for d in shape)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LinkError(f"{self.peer} announced a tensor {str(spec)[:80]}: refused")
        np_dtype = np.dtype(dtype)
        size = math.prod(shape) * np_dtype.itemsize  # Python ints: no silent wrap
        if size > MAX_TENSOR:
            raise LinkError(f"{self.peer} announced a tensor of {size} bytes (at most {MAX_TENSOR}): refused")
        buf, got = bytearray(size), 0  # each frame lands in place: one copy of a tensor, not three
        while got < size:
            part = self._frame_in()
            if got + len(part) > size:
                raise LinkError(f"{self.peer} sent more than the {size} bytes of a tensor")
            buf[got:got + len(part)] = part
            got += len(part)
        return torch.from_numpy(np.frombuffer(buf, dtype=np_dtype)).reshape(shape)

    def fail(self, reason: str) -> None:
        """Tell the peer why this side ends the session (best effort), then close."""
        try:
            self.send("error", {"reason": reason[:500]})
        except LinkError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _pub(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def handshake(sock: socket.socket, me: Identity, roster: Mapping[str, Ed25519PublicKey],
              expect: str | frozenset[str], initiator: bool, timeout_s: float = 30.0) -> Link:
    """Authenticate `expect` (a name the signed roster knows, or one of several: a server that any of them
    may call) on a connected socket; raises LinkError, after closing the socket, so the peer is not left
    waiting. The link's `peer` is the name proven."""
    try:
        return _handshake(sock, me, roster, expect, initiator, timeout_s)
    except LinkError:
        sock.close()
        raise
    except Exception as exc:  # anything a peer's bytes could provoke is a refusal, never a crash or an open socket
        sock.close()
        raise LinkError(f"handshake with {expect} failed ({type(exc).__name__})") from None


def _handshake(sock: socket.socket, me: Identity, roster: Mapping[str, Ed25519PublicKey],
               expected: str | frozenset[str], initiator: bool, timeout_s: float) -> Link:
    allowed = frozenset([expected]) if isinstance(expected, str) else expected
    for name in sorted(allowed - set(roster)):
        raise LinkError(f"{name} is not a party of the federation's signed roster")
    expect = "/".join(sorted(allowed))  # until the peer names itself
    sock.settimeout(timeout_s)
    eph = X25519PrivateKey.generate()
    hello = json.dumps({"v": 1, "name": me.name, "eph": _pub(eph.public_key()).hex()}).encode()
    deadline = time.monotonic() + timeout_s
    plain = Link(sock, expect, bytes(32), bytes(32), timeout_s)  # framing only, for the two openings
    plain.deadline = deadline
    plain._sendall(struct.pack(">I", len(hello)) + hello)
    (size,) = struct.unpack(">I", plain._exact(4))
    if size > 4096:
        raise LinkError(f"{expect}: an opening message of {size} bytes: refused")
    raw = plain._exact(size)
    try:
        theirs = json.loads(raw)
        name, peer_eph = str(theirs["name"]), X25519PublicKey.from_public_bytes(bytes.fromhex(theirs["eph"]))
        if name not in allowed:
            raise LinkError(f"expected {expect}, the peer says it is {name!r}: refused")
        expect = name
        first, second = (hello, raw) if initiator else (raw, hello)
        digest = hashlib.sha256(LABEL + first + second).digest()
        keys = HKDF(hashes.SHA256(), 64, digest, LABEL).derive(eph.exchange(peer_eph))
    except (ValueError, KeyError, TypeError) as exc:  # also a degenerate X25519 key (all-zero secret)
        raise LinkError(f"{expect}: the opening message does not parse ({type(exc).__name__})") from None
    mine, other = (keys[:32], keys[32:]) if initiator else (keys[32:], keys[:32])
    link = Link(sock, expect, mine, other, timeout_s)
    link.max_frame, link.deadline = HANDSHAKE_FRAME, deadline
    link.send("auth", {"signature": me.key.sign(digest + me.name.encode()).hex()})
    _, body, _ = link.recv("auth")
    try:
        roster[expect].verify(bytes.fromhex(str(body["signature"])), digest + expect.encode())
    except (InvalidSignature, ValueError, KeyError):
        link.fail("your signature does not verify under your roster key")
        raise LinkError(f"{expect} did not prove its roster identity: refused") from None
    try:
        link.send("ready")  # both know the other accepted them before anything else is sent
    except LinkError:
        link.recv()  # the peer refused us and closed: its reason is waiting (raises it)
        raise
    link.recv("ready")
    link.max_frame, link.deadline = MAX_FRAME, None
    return link
