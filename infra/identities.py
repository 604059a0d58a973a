"""Who may do what in the local stack's object store: one S3 identity per party, scoped to buckets.

SeaweedFS identity actions scope to a bucket (`Read:B`, `List:B`, `Write:B`); `Write` includes every
delete, so a hospital's own bucket also carries a bucket policy that denies it deletes (measured on
SeaweedFS 4.48: puts still work, deletes of objects and versions are refused). The layout:

  party        Read/List                          Write             delete
  coordinator  its bucket, every hospital bucket  its bucket        its bucket (retention, rotation)
  hospital X   the coordinator's bucket, its own  its own bucket    nothing (bucket policy)
  mlflow       the MLflow artifact bucket         the same          the same
  admin        everything (the stack operator; no service uses it)

The identities live in one 0600 file (`-s3.config`); `weed` re-reads it on SIGHUP, which applies new
identities, changed secrets and narrowed actions at once (a removed identity stays valid until a
restart, so revocation narrows it to nothing and changes its secret instead).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primia.private_files import write_private_json

ADMIN, COORDINATOR, MLFLOW = "primia-admin", "primia-coordinator", "primia-mlflow"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def as_dict(self) -> dict[str, str]:
        return {"access_key": self.access_key, "secret_key": self.secret_key}


def new_credentials(prefix: str) -> Credentials:
    return Credentials(prefix + secrets.token_hex(6), secrets.token_urlsafe(30))


class Identities:
    """The identities file of the local S3 server (the source of truth; `render` writes weed's form)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self, parties: dict[str, dict[str, Any]]) -> None:
        write_private_json(self.path, parties)
        write_private_json(self.weed_config, {"identities": [
            {"name": name, "credentials": [{"accessKey": p["access_key"], "secretKey": p["secret_key"]}],
             "actions": p["actions"]} for name, p in sorted(parties.items())]})

    @property
    def weed_config(self) -> Path:
        return self.path.with_name("s3-identities.json")

    def bootstrap(self, checkpoints: str, mlflow: str) -> dict[str, Credentials]:
        """Admin, coordinator and MLflow identities, made once and kept."""
        parties = self.load()
        for name, actions in ((ADMIN, ["Admin", "Read", "List", "Tagging", "Write"]),
                              (COORDINATOR, [f"Read:{checkpoints}", f"List:{checkpoints}", f"Write:{checkpoints}"]),
                              (MLFLOW, [f"Read:{mlflow}", f"List:{mlflow}", f"Write:{mlflow}"])):
            if name not in parties:
                creds = new_credentials(name.split("-")[1][:5])
                parties[name] = {**creds.as_dict(), "actions": actions}
        self.save(parties)
        return {n: Credentials(p["access_key"], p["secret_key"]) for n, p in parties.items()}

    def add_hospital(self, hospital: str, bucket: str, checkpoints: str) -> Credentials:
        """A hospital's identity (new or renewed): read the coordinator's bucket, read and write its own.
        The coordinator gains read access to the hospital's bucket."""
        parties = self.load()
        name = f"hospital-{hospital}"
        creds = new_credentials("h")
        parties[name] = {**creds.as_dict(), "actions": [f"Read:{checkpoints}", f"List:{checkpoints}",
                                                        f"Read:{bucket}", f"List:{bucket}", f"Write:{bucket}"],
                         "bucket": bucket}
        coordinator = parties[COORDINATOR]
        coordinator["actions"] = sorted(set(coordinator["actions"]) | {f"Read:{bucket}", f"List:{bucket}"})
        self.save(parties)
        return creds

    def revoke_hospital(self, hospital: str) -> None:
        """No actions and a secret nobody knows (weed keeps a removed identity until it restarts)."""
        parties = self.load()
        name = f"hospital-{hospital}"
        if name in parties:
            parties[name] = {**parties[name], "secret_key": secrets.token_urlsafe(30), "actions": []}
            self.save(parties)


def deny_deletes_policy(bucket: str, identity: str) -> str:
    """A bucket policy that keeps `identity` from deleting anything in `bucket` (objects or versions)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": {"AWS": [f"arn:aws:iam::000000000000:user/{identity}"]},
        "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}]})


def reload(pid: int) -> None:
    """Tell the running S3 server to re-read its identities (applies at once)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        pass
