"""Per-round key agreement: fresh X25519 pairs, HKDF-derived pairwise seeds and share-box keys.

Each hospital makes two fresh X25519 pairs per round: `c` encrypts the Shamir shares it sends to a
neighbour (AES-256-GCM), `s` derives the pairwise mask seed. Both HKDF derivations bind the
federation, round and the unordered pair, so a key or seed from one round or pair is useless in another.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from primia.secure.prg import SEED_BYTES


class TamperedShareError(ValueError):
    """A share ciphertext failed its AES-GCM tag: altered, misaddressed or from another round."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Context:
    """What every derived key is bound to."""

    federation: str
    round: int

    def info(self, purpose: str, a: str, b: str) -> bytes:
        lo, hi = sorted((a, b))
        return json.dumps([purpose, self.federation, self.round, lo, hi]).encode()


def _derive(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def pair_seed(ctx: Context, me: str, s_private: X25519PrivateKey, peer: str, peer_s_public: bytes) -> bytes:
    """The 256-bit seed of the pairwise mask between `me` and `peer` (both derive the same one)."""
    return _derive(s_private, peer_s_public, ctx.info("primia-secagg-mask-v1", me, peer))


def _box_key(ctx: Context, me: str, c_private: X25519PrivateKey, peer: str, peer_c_public: bytes) -> bytes:
    return _derive(c_private, peer_c_public, ctx.info("primia-secagg-share-v1", me, peer))


def seal_share(ctx: Context, sender: str, c_private: X25519PrivateKey, recipient: str, recipient_c_public: bytes,
               plaintext: bytes) -> dict[str, Any]:
    key = _box_key(ctx, sender, c_private, recipient, recipient_c_public)
    nonce = os.urandom(12)
    aad = json.dumps([ctx.federation, ctx.round, sender, recipient]).encode()
    return {"nonce": b64(nonce), "ct": b64(AESGCM(key).encrypt(nonce, plaintext, aad))}


def open_share(ctx: Context, sender: str, sender_c_public: bytes, recipient: str, c_private: X25519PrivateKey,
               box: dict[str, Any]) -> bytes:
    key = _box_key(ctx, recipient, c_private, sender, sender_c_public)
    aad = json.dumps([ctx.federation, ctx.round, sender, recipient]).encode()
    try:
        return AESGCM(key).decrypt(unb64(box["nonce"]), unb64(box["ct"]), aad)
    except (InvalidTag, KeyError, ValueError) as exc:
        raise TamperedShareError(f"share from {sender} to {recipient} failed its AES-GCM tag") from exc
