"""Where the signed roster lives and how each party comes to trust it (no Prefect).

The authority keeps its key and a draft of the next roster in its own folder (offline in production;
under PRIMIA_HOME/authority on a development stack, where one operator plays every role). `sign`
makes the next version; the coordinator publishes the signed document in its bucket
(`roster/roster.json`), where every party reads it and checks it against the authority key it pinned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from primia.errors import ConfigError, IntegrityError, StoreError
from primia.federation import roster as r
from primia.federation.identity import PublicIdentity
from primia.store.s3 import ObjectStore

AUTHORITY_FILE, DRAFT_FILE, SIGNED_FILE = "authority.json", "roster.draft.json", "roster.json"


@dataclass(frozen=True)
class AuthorityFolder:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / AUTHORITY_FILE

    def exists(self) -> bool:
        return self.key_file.exists()

    def init(self, name: str, coordinator_key: str, coordinator_bucket: str) -> str:
        """Create the authority key and an empty draft roster naming the coordinator; its public key."""
        public = r.init_authority(self.key_file)
        self.save_draft(r.Roster(name, 0, coordinator_key, coordinator_bucket))
        return public

    def public_key(self) -> str:
        return r.authority_public(r.load_authority(self.key_file))

    def draft(self) -> r.Roster:
        path = self.path / DRAFT_FILE
        if not path.exists():
            raise ConfigError(f"no roster draft at {path}: run `primia federation init` first")
        return r.Roster.from_body(json.loads(path.read_text()))

    def save_draft(self, roster: r.Roster) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.path / DRAFT_FILE).write_text(json.dumps(roster.body(), indent=1, sort_keys=True))

    def add(self, public: PublicIdentity, bucket: str | None = None) -> r.Roster:
        roster = self.draft().with_hospital(public, bucket)
        self.save_draft(roster)
        return roster

    def add_service(self, public: PublicIdentity, role: str) -> r.Roster:
        roster = self.draft().with_service(public, role)
        self.save_draft(roster)
        return roster

    def revoke(self, hospital: str) -> r.Roster:
        roster = self.draft().without_hospital(hospital)
        self.save_draft(roster)
        return roster

    def sign(self, valid_days: float = 90) -> dict[str, Any]:
        """The next version of the roster, signed; the draft and the signed file are updated."""
        draft = self.draft()
        latest = self.signed_version()
        version = max(draft.version, latest) + 1
        doc = r.sign(replace(draft, version=version), r.load_authority(self.key_file), valid_days)
        self.save_draft(r.Roster.from_body(doc["body"]))
        (self.path / SIGNED_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))
        return doc

    def signed(self) -> r.Roster | None:
        path = self.path / SIGNED_FILE
        if not path.exists():
            return None
        return r.open_signed(json.loads(path.read_text()), self.public_key(), str(path))

    def signed_version(self) -> int:
        """The version of the last signed roster (expired or not: the next one must be newer)."""
        path = self.path / SIGNED_FILE
        return int(json.loads(path.read_text())["body"]["version"]) if path.exists() else 0

    def signed_doc(self) -> dict[str, Any]:
        path = self.path / SIGNED_FILE
        if not path.exists():
            raise ConfigError(f"no signed roster at {path}: run `primia federation sign`")
        return dict(json.loads(path.read_text()))


def publish(store: ObjectStore, doc: dict[str, Any]) -> None:
    """Put the signed roster where every party reads it (the coordinator's bucket)."""
    store.put(r.ROSTER_KEY, json.dumps(doc, sort_keys=True).encode(), metadata={"kind": r.ROSTER_KIND})


def fetch(store: ObjectStore, pin: r.Pin) -> r.Roster:
    """The published roster, accepted only if the pinned authority signed it and it is not older than
    the last version this party saw."""
    where = f"s3://{store.bucket}/{r.ROSTER_KEY}"
    try:
        raw = store.get(r.ROSTER_KEY)
    except StoreError as exc:
        raise ConfigError(f"no signed roster at {where} ({exc}): the authority signs one with `primia federation "
                          f"sign`") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        raise IntegrityError(f"{where} is not JSON: refused") from None
    return pin.accept(doc, where)
