"""A hospital's privacy account in its own storage: encrypted, bound, and never silently fresh."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from primia.errors import IntegrityError, PrivacyError
from primia.privacy.accounting import SampleAccount
from primia.privacy.keeper import AccountKeeper, FileRecord, MemoryRecord
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring


def _account(rounds: int) -> SampleAccount:
    a = SampleAccount.new("fed", "h1", "prv", 1e-5, 1.1, 0.05)
    a.accountant.history.append((1.1, 0.05, 20 * rounds))
    a.rounds = rounds
    return a


def test_round_trip_encrypted(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    keeper = AccountKeeper(CheckpointStore(objects, "fed", make_keyring(tmp_path)), MemoryRecord(), "h1")
    assert keeper.load("fed", "prv") is None  # never trained here: a new account
    keeper.save(_account(2))
    back = keeper.load("fed", "prv")
    assert back is not None and back.rounds == 2 and back.steps == 40
    raw = b"".join(objects.objects.values())
    assert b"history" not in raw and b"sample_rate" not in raw  # only ciphertext in the bucket


def test_a_deleted_or_rolled_back_account_is_refused(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = CheckpointStore(objects, "fed", make_keyring(tmp_path))
    record = FileRecord(tmp_path / "hospital" / "privacy-record.json")
    keeper = AccountKeeper(store, record, "h1")
    keeper.save(_account(1))
    old = objects.get(store.private_key("privacy/h1-account"))
    old_meta = objects.metadata(store.private_key("privacy/h1-account"))
    keeper.save(_account(3))
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600 and record.get("fed/h1") == 3
    objects.put(store.private_key("privacy/h1-account"), old, metadata=old_meta)  # an older version put back
    with pytest.raises(PrivacyError, match="rolled back"):
        keeper.load("fed", "prv")
    objects.remove_all_versions(store.private_key("privacy/h1-account"))
    with pytest.raises(PrivacyError, match="missing from its storage but it has trained 3 rounds"):
        keeper.load("fed", "prv")


def test_another_hospitals_account_does_not_open_as_this_ones(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = CheckpointStore(objects, "fed", make_keyring(tmp_path))
    AccountKeeper(store, MemoryRecord(), "h2").save(_account_of("h2"))
    src, dst = store.private_key("privacy/h2-account"), store.private_key("privacy/h1-account")
    objects.put(dst, objects.get(src), metadata=objects.metadata(src))
    with pytest.raises(IntegrityError):  # the ciphertext is bound to its name
        AccountKeeper(store, MemoryRecord(), "h1").load("fed", "prv")


def _account_of(hospital: str) -> SampleAccount:
    a = SampleAccount.new("fed", hospital, "prv", 1e-5, 1.1, 0.05)
    a.rounds = 1
    return a
