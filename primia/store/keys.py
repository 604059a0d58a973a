"""Key material for checkpoints: master keys (key-encryption keys, by id) and the coordinator's
Ed25519 signing key.

Sources, first match wins per item: the environment (PRIMIA_CRYPTO__MASTER_KEY="id:base64",
PRIMIA_CRYPTO__PREVIOUS_KEYS="id:base64,...", PRIMIA_CRYPTO__SIGNING_KEY="base64"), then the
key file (JSON, mode 0600, default <home>/keys/keyring.json). A key file readable by others is
refused: privacy fails closed.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from primia.config import CryptoSettings
from primia.errors import ConfigError
from primia.private_files import read_private_json, write_private_json

KEY_BYTES = 32


def _b64d(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, TypeError):
        raise ConfigError(f"{what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{what} must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_key_id(prefix: str = "kek") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass
class KeyRing:
    """Master keys by id (the current one wraps new data keys) and the signing key pair."""

    keks: dict[str, bytes] = field(default_factory=dict)
    current: str | None = None
    signing_private: Ed25519PrivateKey | None = None
    signing_id: str | None = None

    def current_kek(self) -> tuple[str, bytes]:
        if self.current is None or self.current not in self.keks:
            raise ConfigError("no master key is configured: run `primia keys init` or set PRIMIA_CRYPTO__MASTER_KEY")
        return self.current, self.keks[self.current]

    def kek(self, key_id: str, obj: str) -> bytes:
        if key_id not in self.keks:
            raise ConfigError(f"master key {key_id!r} is not configured, but {obj} was wrapped with it")
        return self.keks[key_id]

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        if self.signing_private is None or self.signing_id is None:
            raise ConfigError("no coordinator signing key: run `primia keys init` or set PRIMIA_CRYPTO__SIGNING_KEY")
        return self.signing_id, self.signing_private

    def public_key(self) -> Ed25519PublicKey:
        return self.signer()[1].public_key()

    def public_key_b64(self) -> str:
        raw = self.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return _b64e(raw)


def key_file_path(settings: CryptoSettings, home: Path) -> Path:
    return settings.key_file or Path(home) / "keys" / "keyring.json"


def _read_key_file(path: Path) -> dict[str, object]:
    return read_private_json(path, "key file") if path.exists() else {}


def _parse_pairs(text: str, what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kid, sep, b64 = item.partition(":")
        if not sep or not kid:
            raise ConfigError(f"{what}: expected 'key-id:base64', got an entry without a key id")
        out[kid] = _b64d(b64, f"{what} {kid!r}")
    return out


def load_keyring(settings: CryptoSettings, home: Path) -> KeyRing:
    path = key_file_path(settings, home)
    data = _read_key_file(path)
    ring = KeyRing()
    for kid, b64 in dict(data.get("keks", {})).items():  # type: ignore[call-overload]
        ring.keks[kid] = _b64d(b64, f"key file {path}: master key {kid!r}")
    ring.current = data.get("current")  # type: ignore[assignment]
    if settings.previous_keys:
        ring.keks.update(_parse_pairs(settings.previous_keys.get_secret_value(), "PRIMIA_CRYPTO__PREVIOUS_KEYS"))
    if settings.master_key:
        pair = _parse_pairs(settings.master_key.get_secret_value(), "PRIMIA_CRYPTO__MASTER_KEY")
        if len(pair) != 1:
            raise ConfigError("PRIMIA_CRYPTO__MASTER_KEY: expected exactly one 'key-id:base64'")
        ring.keks.update(pair)
        ring.current = next(iter(pair))
    signing = data.get("signing") or {}
    if settings.signing_key:
        priv = _b64d(settings.signing_key.get_secret_value(), "PRIMIA_CRYPTO__SIGNING_KEY")
        ring.signing_private, ring.signing_id = Ed25519PrivateKey.from_private_bytes(priv), "env"
    elif isinstance(signing, dict) and signing.get("private"):
        priv = _b64d(str(signing["private"]), f"key file {path}: signing key")
        ring.signing_private = Ed25519PrivateKey.from_private_bytes(priv)
        ring.signing_id = str(signing.get("id", "coordinator"))
    return ring


def init_key_file(path: Path) -> bool:
    """Create a key file with one master key and a signing key; False if one exists already."""
    if path.exists():
        _read_key_file(path)  # still checks its mode
        return False
    kid = new_key_id()
    priv = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    write_private_json(path, {"version": 1, "current": kid, "keks": {kid: _b64e(secrets.token_bytes(KEY_BYTES))},
                          "signing": {"id": new_key_id("coordinator"), "private": _b64e(priv)}})
    return True


def rotate_key_file(path: Path) -> str:
    """Add a new master key and make it current; older keys stay so old objects still decrypt."""
    data = _read_key_file(path)
    if not data:
        raise ConfigError(f"key file {path} does not exist: run `primia keys init` first")
    kid = new_key_id()
    keks = dict(data.get("keks", {}))  # type: ignore[call-overload]
    keks[kid] = _b64e(secrets.token_bytes(KEY_BYTES))
    data.update(keks=keks, current=kid)
    write_private_json(path, data)
    return kid


def export_hospital_key_file(path: Path, out: Path) -> None:
    """A hospital's key file: the federation's master keys, without the coordinator's signing key."""
    data = _read_key_file(path)
    if not data:
        raise ConfigError(f"key file {path} does not exist: run `primia keys init` first")
    write_private_json(out, {"version": 1, "current": data.get("current"), "keks": data.get("keks", {})})
