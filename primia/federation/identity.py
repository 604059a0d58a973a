"""A hospital's long-term identity: an Ed25519 signing key and an X25519 key-agreement key.

The private halves stay at the hospital, in `<keys_dir>/identity.json` (mode 0600) or, with a
passphrase, as encrypted PKCS#8 inside that file; only the public halves go to the federation
authority, for the signed roster.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from primia.config import SLUG
from primia.errors import ConfigError

IDENTITY_FILE, PUBLIC_FILE = "identity.json", "public.json"


@dataclass(frozen=True)
class PublicIdentity:
    hospital: str
    signing_public: str  # base64 raw Ed25519
    agreement_public: str  # base64 raw X25519

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.signing_public}:{self.agreement_public}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Identity:
    public: PublicIdentity
    signing: Ed25519PrivateKey
    agreement: X25519PrivateKey


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _pem(key: Ed25519PrivateKey | X25519PrivateKey, passphrase: str | None) -> str:
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc).decode()


def create_identity(hospital: str, keys_dir: Path, passphrase: str | None = None) -> PublicIdentity:
    """Generate and store a new identity; refuses to overwrite an existing one."""
    import re

    if not re.match(SLUG, hospital):
        raise ConfigError(f"hospital name {hospital!r}: expected lower-case letters, digits and dashes")
    path = Path(keys_dir) / IDENTITY_FILE
    if path.exists():
        raise ConfigError(f"{path} already holds an identity: keep it, or move it away to make a new one")
    signing, agreement = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    public = PublicIdentity(hospital, _raw_public(signing), _raw_public(agreement))
    doc = {"hospital": hospital, "encrypted": passphrase is not None, "signing_private": _pem(signing, passphrase),
           "agreement_private": _pem(agreement, passphrase), "signing_public": public.signing_public,
           "agreement_public": public.agreement_public}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    return public


def load_identity(keys_dir: Path, passphrase: str | None = None) -> Identity:
    path = Path(keys_dir) / IDENTITY_FILE
    if not path.exists():
        raise ConfigError(f"no hospital identity at {path}: run `primia hospital register NAME` first")
    if os.stat(path).st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 it")
    doc = json.loads(path.read_text())
    if doc.get("encrypted") and not passphrase:
        raise ConfigError(f"{path} is encrypted: a passphrase is needed")
    pw = passphrase.encode() if doc.get("encrypted") and passphrase else None
    try:
        signing = serialization.load_pem_private_key(doc["signing_private"].encode(), password=pw)
        agreement = serialization.load_pem_private_key(doc["agreement_private"].encode(), password=pw)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: wrong passphrase, or the key file is damaged") from None
    if not isinstance(signing, Ed25519PrivateKey) or not isinstance(agreement, X25519PrivateKey):
        raise ConfigError(f"{path}: unexpected key types")
    return Identity(PublicIdentity(doc["hospital"], _raw_public(signing), _raw_public(agreement)), signing, agreement)


def write_public(public: PublicIdentity, keys_dir: Path) -> Path:
    """The public half, for the federation authority to put on the roster (nothing secret in it)."""
    path = Path(keys_dir) / PUBLIC_FILE
    path.write_text(json.dumps({"hospital": public.hospital, "signing_public": public.signing_public,
                                "agreement_public": public.agreement_public, "fingerprint": public.fingerprint},
                               indent=1))
    return path


def read_public(path: Path) -> PublicIdentity:
    try:
        doc = json.loads(Path(path).read_text())
        public = PublicIdentity(doc["hospital"], doc["signing_public"], doc["agreement_public"])
    except FileNotFoundError:
        raise ConfigError(f"no public identity at {path}: the hospital makes it with `primia hospital register`") \
            from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a hospital's public identity (hospital, signing_public, "
                          f"agreement_public)") from None
    if doc.get("fingerprint", public.fingerprint) != public.fingerprint:
        raise ConfigError(f"{path}: the fingerprint does not match the keys in it")
    return public
