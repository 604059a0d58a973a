"""Tamper-evident history: manifests form a hash chain, and a signed head names the latest.

Each round's manifest carries the sha256 of the previous committed manifest and a commit counter; after
the manifest the coordinator writes `federations/<id>/head.json`, signed, naming the round, the counter
and the manifest's digest. The coordinator also remembers the newest head it wrote (outside the object
store), so a history cut back - the newest manifests deleted, an old head restored from a bucket
version - is refused on resume with the round named, instead of quietly starting from an older round.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from primia.errors import IntegrityError
from primia.private_files import write_private_json
from primia.signing import canonical_json


@dataclass(frozen=True)
class Head:
    round: int
    counter: int
    manifest: str  # sha256 of the manifest's stored bytes

    def body(self, federation: str) -> dict[str, Any]:
        return {"kind": "primia-head-v1", "federation": federation, "round": self.round, "counter": self.counter,
                "manifest": self.manifest}


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def sign_head(head: Head, federation: str, key: Ed25519PrivateKey) -> bytes:
    body = head.body(federation)
    return json.dumps({"body": body, "signature": base64.b64encode(key.sign(canonical_json(body))).decode()},
                      sort_keys=True).encode()


def open_head(raw: bytes, public: Ed25519PublicKey, federation: str, where: str) -> Head:
    try:
        doc = json.loads(raw)
        body, signature = doc["body"], base64.b64decode(doc["signature"], validate=True)
        public.verify(signature, canonical_json(body))
        if body.get("kind") != "primia-head-v1" or body.get("federation") != federation:
            raise ValueError("not this federation's head")
        return Head(int(body["round"]), int(body["counter"]), str(body["manifest"]))
    except (ValueError, KeyError, TypeError, InvalidSignature) as exc:
        raise IntegrityError(f"integrity check failed for {where}: the head is not signed by the coordinator's key "
                             f"for this federation ({type(exc).__name__}): refused") from None


class Memory:
    """The newest head counter this coordinator wrote per federation (a file of its own, 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, federation: str) -> Path:
        return self.folder / f"{federation}.json"

    def counter(self, federation: str) -> int:
        path = self._path(federation)
        return int(json.loads(path.read_text())["counter"]) if path.exists() else 0

    def remember(self, federation: str, head: Head) -> None:
        """Never lowers what it remembers: only a newer commit moves it on."""
        if head.counter >= self.counter(federation):
            write_private_json(self._path(federation), {"round": head.round, "counter": head.counter,
                                                        "manifest": head.manifest})


def check_not_backwards(federation: str, head: Head | None, remembered: int) -> None:
    if head is not None and head.counter < remembered:
        raise IntegrityError(f"federation {federation!r}: the head names commit {head.counter} (round {head.round}), "
                             f"older than commit {remembered} this coordinator wrote: the history went backwards; "
                             f"refused")


def check_chain(federation: str, head: Head | None, manifests: dict[int, tuple[bytes, dict[str, Any]]],
                remembered: int) -> int:
    """The round to resume from, after checking that the history is whole: the head verifies and is not
    older than what this coordinator wrote, its round's manifest exists with its digest, and every
    manifest of the unbroken tail names its predecessor's digest. `manifests`: round -> (raw, body)."""
    if head is None:
        if remembered or manifests:
            newest = max(manifests) if manifests else "?"
            raise IntegrityError(f"federation {federation!r}: the signed head is missing (newest manifest: round "
                                 f"{newest}): the history was tampered with; refused")
        return -1
    check_not_backwards(federation, head, remembered)
    if head.round not in manifests:
        raise IntegrityError(f"federation {federation!r}: round {head.round}, which the signed head names, has no "
                             f"manifest: the newest rounds were deleted; refused")
    raw, _ = manifests[head.round]
    if digest(raw) != head.manifest:
        raise IntegrityError(f"federation {federation!r}: the manifest of round {head.round} is not the one the "
                             f"signed head names; refused")
    newer = sorted(r for r in manifests if r > head.round)
    if newer:
        raise IntegrityError(f"federation {federation!r}: round {newer[0]} is committed past the signed head (round "
                             f"{head.round}): the head went backwards; refused")
    r = head.round
    while r - 1 in manifests:  # the contiguous tail (retention deletes older rounds)
        if manifests[r][1].get("previous") != digest(manifests[r - 1][0]):
            raise IntegrityError(f"federation {federation!r}: the chain is broken at round {r} (its manifest does not "
                                 f"name round {r - 1}'s); refused")
        r -= 1
    return head.round
