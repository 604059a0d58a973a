"""Ed25519 signatures over canonical JSON: what signed round answers and secure-aggregation stage
messages share (one encoding, one way to check a signature against a registered key)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

Verifier = Callable[[str, bytes, bytes], bool]  # (hospital, message, signature) -> valid under its registered key


def canonical_json(payload: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, so both sides encode a payload identically."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def ed25519_valid(public_b64: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` over `message` verifies under the base64 raw Ed25519 public key."""
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64, validate=True)).verify(signature, message)
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False


def verifier_for(public_keys: Mapping[str, str]) -> Verifier:
    """Checks messages against each hospital's key (hospital -> base64 raw Ed25519 public key);
    a hospital without a key never verifies."""
    keys = dict(public_keys)

    def verify(hospital: str, message: bytes, signature: bytes) -> bool:
        key = keys.get(hospital)
        return key is not None and ed25519_valid(key, message, signature)

    return verify
