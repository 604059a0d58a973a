"""Hospital identities: private halves 0600 (or passphrase-encrypted), never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from primia.errors import ConfigError
from primia.federation.identity import create_identity, load_identity


def test_create_and_load(tmp_path: Path) -> None:
    public = create_identity("charite", tmp_path / "k")
    path = tmp_path / "k" / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ident = load_identity(tmp_path / "k")
    assert ident.public == public and len(public.fingerprint) == 16
    sig = ident.signing.sign(b"round 3")
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(base64.b64decode(public.signing_public)).verify(sig, b"round 3")


def test_passphrase(tmp_path: Path) -> None:
    create_identity("tum", tmp_path, passphrase="correct horse")
    assert "PRIVATE KEY-----" in (tmp_path / "identity.json").read_text()
    assert "ENCRYPTED" in (tmp_path / "identity.json").read_text()
    assert load_identity(tmp_path, "correct horse").public.hospital == "tum"
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_identity(tmp_path, "wrong")
    with pytest.raises(ConfigError, match="a passphrase is needed"):
        load_identity(tmp_path)


def test_refusals(tmp_path: Path) -> None:
    create_identity("lmu", tmp_path)
    with pytest.raises(ConfigError, match="already holds an identity"):
        create_identity("lmu", tmp_path)
    with pytest.raises(ConfigError, match="expected lower-case"):
        create_identity("Bad Name", tmp_path / "x")
    (tmp_path / "identity.json").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_identity(tmp_path)
