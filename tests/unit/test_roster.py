"""The signed roster: the authority's signature and the version a hospital last saw decide; a
coordinator can neither forge, swap a key in, nor roll back a revocation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.errors import ConfigError, IntegrityError
from primia.federation import roster as r
from primia.federation.identity import create_identity
from primia.federation.trust import AuthorityFolder
from primia.secure.ledger import FileLedger
from primia.secure.protocol import ProtocolViolation


def _folder(tmp_path: Path) -> AuthorityFolder:
    folder = AuthorityFolder(tmp_path / "authority")
    folder.init("fed", r.authority_public(Ed25519PrivateKey.generate()), "primia-checkpoints")
    for name in ("h1", "h2"):
        folder.add(create_identity(name, tmp_path / name))
    return folder


def test_a_hospital_accepts_only_the_authoritys_signature_and_never_an_older_version(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    v1 = folder.sign()
    pin = r.Pin(tmp_path / "h1" / "roster-pin.json")
    pin.enrol(folder.public_key())
    assert set(pin.accept(v1).active()) == {"h1", "h2"}
    folder.revoke("h2")
    v2 = folder.sign()
    assert "h2" not in pin.accept(v2).active()
    with pytest.raises(IntegrityError, match="version 1, older than version 2 this hospital already saw"):
        pin.accept(v1)  # the coordinator replays the roster from before the revocation
    forged = r.sign(r.Roster.from_body(v2["body"]), Ed25519PrivateKey.generate())  # re-signed by another key
    with pytest.raises(IntegrityError, match="does not verify against the pinned federation authority key"):
        pin.accept(forged)
    swapped = json.loads(json.dumps(v2))  # a key swapped in the body: the signature no longer covers it
    swapped["body"]["hospitals"]["h1"]["signing_public_key"] = r.authority_public(Ed25519PrivateKey.generate())
    with pytest.raises(IntegrityError, match="does not verify"):
        pin.accept(swapped)


def test_a_pin_is_for_one_authority_and_its_key_file_must_be_private(tmp_path: Path) -> None:
    pin = r.Pin(tmp_path / "pin.json")
    pin.enrol(r.authority_public(Ed25519PrivateKey.generate()))
    with pytest.raises(ConfigError, match="pins another federation authority"):
        pin.enrol(r.authority_public(Ed25519PrivateKey.generate()))
    (tmp_path / "pin.json").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        pin.authority_key  # noqa: B018


def test_enrolment_refuses_a_second_active_entry_and_a_revoked_hospital_never_verifies(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with pytest.raises(ConfigError, match="already on the roster"):
        folder.add(create_identity("h1", tmp_path / "h1-again"))
    roster = r.Roster.from_body(folder.sign()["body"])
    assert roster.hospitals["h1"].bucket == "primia-h-h1"
    revoked = roster.without_hospital("h1")
    assert revoked.verifier()("h1", b"m", b"s") is False and "h1" not in revoked.active()


def test_the_unmask_ledger_holds_across_agent_restarts_and_fails_closed_when_damaged(tmp_path: Path) -> None:
    path = tmp_path / "unmask-ledger.json"
    FileLedger(path).claim("fed/round-1/abc", ["a", "b", "c"], "s1")
    FileLedger(path).claim("fed/round-1/abc", ["a", "b", "c"], "s2")  # the same set again: a restarted coordinator
    with pytest.raises(ProtocolViolation, match="already helped unmask a sum over a, b, c"):
        FileLedger(path).claim("fed/round-1/abc", ["a", "b", "d"], "s3")
    FileLedger(path).claim("fed/round-2/def", ["a", "b", "d"], "s4")  # another model: fine
    path.write_text("{not json")
    with pytest.raises(ProtocolViolation, match="damaged: refusing to reveal shares"):
        FileLedger(path).claim("fed/round-3/x", ["a"], "s5")


def test_a_malformed_roster_is_a_clear_refusal(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    doc = r.sign(r.Roster("fed", 1, "k", "b"), key)
    doc["body"] = replace(r.Roster.from_body(doc["body"])).body() | {"kind": "other"}
    with pytest.raises(IntegrityError):
        r.open_signed(doc, r.authority_public(key))
    with pytest.raises(IntegrityError, match="not a signed roster"):
        r.open_signed({"body": {}}, r.authority_public(key))


def test_an_expired_roster_or_one_of_another_federation_is_refused(tmp_path: Path) -> None:
    """A coordinator that withholds a newer version (a revocation) can do so only until the roster it
    keeps showing expires; and a roster the same authority signed for another federation is not this one."""
    folder = _folder(tmp_path)
    pin = r.Pin(tmp_path / "h1" / "roster-pin.json")
    pin.enrol(folder.public_key())
    pin.accept(folder.sign(valid_days=1))
    stale = r.sign(r.Roster.from_body(folder.draft().body()), r.load_authority(folder.key_file), valid_days=-1)
    stale["body"]["version"] = 99  # newer than seen, signed by the authority - but out of date
    stale = r.sign(r.Roster.from_body(stale["body"]), r.load_authority(folder.key_file), valid_days=-1)
    with pytest.raises(IntegrityError, match="expired on .*the authority must sign a fresh one"):
        pin.accept(stale)
    other = r.Roster.from_body(folder.draft().body())
    other = r.sign(replace(other, name="another-federation", version=100), r.load_authority(folder.key_file))
    with pytest.raises(IntegrityError, match="roster of federation 'another-federation'; this party enrolled in 'fed'"):
        pin.accept(other)
