"""Envelope encryption of one stored object.

A fresh 256-bit data key per object encrypts the payload with AES-256-GCM; the data key is wrapped
(RFC 3394 AES key wrap) by the current master key, named by its id. The associated data binds
bucket, object key, federation, round and format version, so a copy under another name does not
decrypt. The header (key id, wrapped key, nonce, sha256 of plaintext and ciphertext) travels as
the object's S3 metadata; re-wrapping replaces the header and leaves the payload untouched.

Load order: verify (ciphertext hash) -> decrypt (tag) -> check plaintext hash; parsing is the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from primia.errors import ConfigError, IntegrityError
from primia.store.keys import KeyRing

FORMAT_VERSION = "1"
FIELDS = ("primia-format", "primia-kid", "primia-wrapped-key", "primia-nonce", "primia-sha256-plain",
          "primia-sha256-cipher")


@dataclass(frozen=True)
class Location:
    """Where an object belongs; the associated data is derived from it."""

    bucket: str
    key: str
    federation: str
    round: int

    def aad(self) -> bytes:
        return json.dumps({"bucket": self.bucket, "key": self.key, "federation": self.federation,
                           "round": self.round, "format": FORMAT_VERSION}, sort_keys=True).encode()

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    header: dict[str, str]

    @property
    def sha256(self) -> str:
        return self.header["primia-sha256-cipher"]


def seal(plaintext: bytes, ring: KeyRing, where: Location) -> Sealed:
    kid, kek = ring.current_kek()
    data_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, where.aad())
    header = {
        "primia-format": FORMAT_VERSION,
        "primia-kid": kid,
        "primia-wrapped-key": base64.b64encode(aes_key_wrap(kek, data_key)).decode(),
        "primia-nonce": base64.b64encode(nonce).decode(),
        "primia-sha256-plain": hashlib.sha256(plaintext).hexdigest(),
        "primia-sha256-cipher": hashlib.sha256(ciphertext).hexdigest(),
    }
    return Sealed(ciphertext, header)


def _header(header: dict[str, str], where: Location) -> dict[str, str]:
    missing = [f for f in FIELDS if f not in header]
    if missing:
        raise IntegrityError(f"{where} is not an encrypted primia object (missing {', '.join(missing)})")
    if header["primia-format"] != FORMAT_VERSION:
        raise IntegrityError(f"{where}: unsupported format version {header['primia-format']!r}")
    return header


def _data_key(header: dict[str, str], ring: KeyRing, where: Location) -> bytes:
    kid = header["primia-kid"]
    try:
        return aes_key_unwrap(ring.kek(kid, str(where)), base64.b64decode(header["primia-wrapped-key"]))
    except InvalidUnwrap:
        raise ConfigError(f"master key {kid!r} does not unwrap the data key of {where}: wrong master key "
                          "(or the wrapped key was altered)") from None
    except ValueError:
        raise IntegrityError(f"{where}: wrapped data key is malformed") from None


def open_sealed(sealed: Sealed, ring: KeyRing, where: Location, expected_sha256: str | None = None) -> bytes:
    """Verify, decrypt and check one object; raises IntegrityError naming it, never returns bad bytes."""
    header = _header(sealed.header, where)
    digest = hashlib.sha256(sealed.ciphertext).hexdigest()
    if digest != header["primia-sha256-cipher"] or (expected_sha256 is not None and digest != expected_sha256):
        raise IntegrityError(f"integrity check failed for {where}: ciphertext sha256 does not match")
    data_key = _data_key(header, ring, where)
    try:
        plaintext = AESGCM(data_key).decrypt(base64.b64decode(header["primia-nonce"]), sealed.ciphertext, where.aad())
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"integrity check failed for {where}: authentication tag does not match "
            "(altered, or written under another name, federation or round)"
        ) from None
    if hashlib.sha256(plaintext).hexdigest() != header["primia-sha256-plain"]:
        raise IntegrityError(f"integrity check failed for {where}: plaintext sha256 does not match")
    return plaintext


def rewrap(header: dict[str, str], ring: KeyRing, where: Location) -> dict[str, str]:
    """The same header with the data key wrapped by the current master key."""
    header = _header(header, where)
    data_key = _data_key(header, ring, where)
    kid, kek = ring.current_kek()
    return {**header, "primia-kid": kid, "primia-wrapped-key": base64.b64encode(aes_key_wrap(kek, data_key)).decode()}
