"""Where a hospital keeps its privacy account: encrypted in its own storage, with a local floor.

After every round the account is written (encrypted, bound to the hospital's name) to the hospital's
own store, and the number of rounds it holds is raised in a record on the hospital's machine. On load
a missing account, or one holding fewer rounds than the record, is refused: deleting or rolling back
the stored account must not give a hospital a fresh budget.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from primia.errors import PrivacyError
from primia.privacy.accounting import Kind, SampleAccount
from primia.privacy.client_dp import ClientAccount
from primia.private_files import read_private_json, write_private_json
from primia.store.checkpoints import CheckpointStore


class Record(Protocol):
    """The largest number of rounds an account has held, per (federation, hospital)."""

    def get(self, key: str) -> int: ...

    def raise_to(self, key: str, rounds: int) -> None: ...


class MemoryRecord:
    """For embedded (simulated) hospitals: the record lives as long as the process."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> int:
        return self._seen.get(key, 0)

    def raise_to(self, key: str, rounds: int) -> None:
        with self._lock:
            self._seen[key] = max(self._seen.get(key, 0), rounds)


class FileRecord:
    """For an agent: a 0600 JSON file next to its keys."""

    def __init__(self, path: Path) -> None:
        self.path, self._lock = Path(path), threading.Lock()

    def _read(self) -> dict[str, int]:
        return {k: int(v) for k, v in read_private_json(self.path, "privacy record").items()} \
            if self.path.exists() else {}

    def get(self, key: str) -> int:
        return self._read().get(key, 0)

    def raise_to(self, key: str, rounds: int) -> None:
        with self._lock:
            seen = self._read()
            seen[key] = max(seen.get(key, 0), rounds)
            write_private_json(self.path, seen)


class AccountKeeper:
    def __init__(self, store: CheckpointStore, record: Record, hospital: str) -> None:
        self.store, self.record, self.hospital = store, record, hospital

    @property
    def _name(self) -> str:
        return f"privacy/{self.hospital}-account"

    def _key(self, federation: str) -> str:
        return f"{federation}/{self.hospital}"

    def load_state(self, federation: str) -> dict[str, Any] | None:
        """The stored account's state (None if this hospital never trained in this federation); missing
        or rolled back against the local record: refused."""
        seen = self.record.get(self._key(federation))
        state = self.store.find_private_json(self._name)
        if state is None:
            if seen:
                raise PrivacyError(f"hospital {self.hospital}: its privacy account for {federation} is missing from "
                                   f"its storage but it has trained {seen} rounds: refusing to train on a fresh budget")
            return None
        rounds = int(state.get("rounds", -1))
        if rounds < seen:
            raise PrivacyError(f"hospital {self.hospital}: its stored privacy account holds {rounds} rounds, "
                               f"it has trained {seen}: the account was rolled back; refusing to train")
        return state

    def load(self, federation: str, kind: Kind) -> SampleAccount | None:
        state = self.load_state(federation)
        return None if state is None else SampleAccount.restore(state, federation, self.hospital, kind)

    def load_client(self, federation: str) -> ClientAccount:
        state = self.load_state(federation)
        return ClientAccount(federation, self.hospital) if state is None else \
            ClientAccount.restore(state, federation, self.hospital)

    def save(self, account: SampleAccount | ClientAccount) -> None:
        """Store first, then raise the floor (a crash in between leaves a floor that is only too low)."""
        self.store.put_private_json(self._name, account.state())
        self.record.raise_to(self._key(account.federation), account.rounds)
