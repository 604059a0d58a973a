"""Federation checkpoints in the object store: encrypted objects, signed manifests, atomic rounds.

Layout: federations/<id>/rounds/<round:05d>/<name>.enc   (global.safetensors, state.json, ...,
        updates/<hospital>.safetensors) and .../manifest.json, written last, signed.
Objects are addressed by `CheckpointRef` (bucket, key, sha256 of the stored bytes, round);
reads verify, decrypt, then the caller parses.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from primia.errors import IntegrityError, StoreError
from primia.messages import CheckpointRef
from primia.store import envelope, manifest
from primia.store import weights as wcodec
from primia.store.keys import KeyRing
from primia.store.s3 import ObjectStore
from primia.store.weights import Weights

_ROUND_RE = re.compile(r"/rounds/(\d{5})/manifest\.json$")


class _PlainCache:
    """Plaintexts of objects this process wrote or verified, keyed by the stored bytes' sha256.

    In embedded mode coordinator and hospitals share a process; this saves a download and a
    decryption per hospital per round. Only verified or self-written bytes enter it.
    """

    def __init__(self, capacity: int = 32) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._items.get(digest)
            if data is not None:
                self._items.move_to_end(digest)
            return data

    def put(self, digest: str, data: bytes) -> None:
        with self._lock:
            self._items[digest] = data
            self._items.move_to_end(digest)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class CommittedRound:
    round: int
    manifest: dict[str, Any]

    def ref(self, name: str) -> CheckpointRef:
        entry = self.manifest["objects"].get(name)
        if entry is None:
            raise StoreError(f"round {self.round} has no object {name!r}")
        return CheckpointRef(entry["bucket"], entry["key"], entry["sha256"], self.round)


class CheckpointStore:
    """`verify_key`: the coordinator's public key that manifests must verify under (a hospital takes it
    from the signed roster and holds no signing key); default: the key ring's own signing key."""

    def __init__(self, store: ObjectStore, federation_id: str, ring: KeyRing,
                 verify_key: Ed25519PublicKey | None = None) -> None:
        self.store = store
        self.federation_id = federation_id
        self.ring = ring
        self._verify_key = verify_key
        self._cache = _PlainCache()

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self._verify_key or self.ring.public_key()

    # ----------------------------------------------------------------- names
    @property
    def prefix(self) -> str:
        return f"federations/{self.federation_id}/"

    def round_prefix(self, server_round: int) -> str:
        return f"{self.prefix}rounds/{server_round:05d}/"

    def key_for(self, server_round: int, name: str) -> str:
        return f"{self.round_prefix(server_round)}{name}.enc"

    def manifest_key(self, server_round: int) -> str:
        return self.round_prefix(server_round) + "manifest.json"

    def _where(self, ref: CheckpointRef) -> envelope.Location:
        return envelope.Location(ref.bucket, ref.key, self.federation_id, ref.round)

    # ----------------------------------------------------------------- objects
    def put_object(self, server_round: int, name: str, plaintext: bytes) -> CheckpointRef:
        key = self.key_for(server_round, name)
        where = envelope.Location(self.store.bucket, key, self.federation_id, server_round)
        sealed = envelope.seal(plaintext, self.ring, where)
        self.store.put(key, sealed.ciphertext, metadata=sealed.header)
        digest = sealed.sha256()
        self._cache.put(digest, plaintext)
        return CheckpointRef(self.store.bucket, key, digest, server_round)

    def get_object(self, ref: CheckpointRef) -> bytes:
        if ref.bucket != self.store.bucket:
            raise StoreError(f"checkpoint {ref.key} is in bucket {ref.bucket}, expected {self.store.bucket}")
        plain = self._cache.get(ref.sha256)
        if plain is None:
            data, meta = self.store.get_with_metadata(ref.key)
            plain = envelope.open_sealed(envelope.Sealed(data, meta), self.ring, self._where(ref), ref.sha256)
            self._cache.put(ref.sha256, plain)
        return plain

    def put_weights(self, server_round: int, weights: Weights, hospital: str | None = None) -> CheckpointRef:
        name = f"updates/{hospital}.safetensors" if hospital else "global.safetensors"
        return self.put_object(server_round, name, wcodec.encode(weights))

    def get_weights(self, ref: CheckpointRef) -> Weights:
        return wcodec.decode(self.get_object(ref), what=f"checkpoint s3://{ref.bucket}/{ref.key}")

    def put_json(self, server_round: int, name: str, data: dict[str, Any]) -> CheckpointRef:
        return self.put_object(server_round, name, json.dumps(data, sort_keys=True).encode())

    def get_json(self, ref: CheckpointRef) -> dict[str, Any]:
        return json.loads(self.get_object(ref))

    def find_json(self, server_round: int, name: str) -> dict[str, Any] | None:
        """A JSON object looked up by name (None if absent), authenticated by its GCM tag and location."""
        data = self.find_object(server_round, name)
        return None if data is None else json.loads(data)

    def find_object(self, server_round: int, name: str) -> bytes | None:
        """An object's plaintext looked up by name (None if absent), authenticated like get_object."""
        key = self.key_for(server_round, name)
        try:
            data, meta = self.store.get_with_metadata(key)
        except StoreError:
            if not self.store.exists(key):
                return None
            data, meta = self.store.get_with_metadata(key)  # written between the two requests
        where = envelope.Location(self.store.bucket, key, self.federation_id, server_round)
        return envelope.open_sealed(envelope.Sealed(data, meta), self.ring, where, None)

    def names(self, server_round: int, folder: str) -> set[str]:
        """Names of the objects directly inside `folder` of a round (one listing request)."""
        prefix = self.round_prefix(server_round) + folder
        names = (o.key[len(prefix):] for o in self.store.list(prefix))
        return {n.removesuffix(".enc") for n in names if "/" not in n and n.endswith(".enc")}

    # ----------------------------------------------------------------- rounds
    def commit(self, server_round: int, refs: dict[str, CheckpointRef]) -> CommittedRound:
        """Write the signed manifest last: from now on the round is visible, exactly once."""
        objects = {name: {"bucket": r.bucket, "key": r.key, "sha256": r.sha256} for name, r in sorted(refs.items())}
        body = manifest.build(self.federation_id, server_round, objects)
        raw = manifest.sign(body, self.ring)
        self.store.put(self.manifest_key(server_round), raw, metadata={"sha256": wcodec.sha256(raw)}, once=True)
        return CommittedRound(server_round, body)

    def committed_rounds(self) -> list[int]:
        rounds = []
        for info in self.store.list(f"{self.prefix}rounds/"):
            m = _ROUND_RE.search(info.key)
            if m:
                rounds.append(int(m.group(1)))
        return sorted(rounds)

    def load_round(self, server_round: int) -> CommittedRound:
        key = self.manifest_key(server_round)
        raw = self.store.get(key)
        where = f"s3://{self.store.bucket}/{key}"
        body = manifest.verify(raw, self.verify_key, where, self.federation_id, server_round)
        return CommittedRound(server_round, body)

    def verify_committed(self, ref: CheckpointRef, name: str = "global.safetensors") -> None:
        """Raise unless `ref` is object `name` of its round's committed, signed manifest: what a hospital
        checks before it validates or trains on weights the coordinator points it to."""
        try:
            entry = self.load_round(ref.round).manifest["objects"].get(name)
        except StoreError as exc:
            raise IntegrityError(f"round {ref.round} of {self.federation_id} is not committed by a signed manifest "
                                 f"({exc}): refusing weights that are not a committed global model") from None
        if entry is None or (entry["bucket"], entry["key"], entry["sha256"]) != (ref.bucket, ref.key, ref.sha256):
            raise IntegrityError(f"s3://{ref.bucket}/{ref.key} is not the committed {name} of round {ref.round}: "
                                 f"refusing weights the coordinator did not sign")

    def latest(self) -> CommittedRound | None:
        rounds = self.committed_rounds()
        return self.load_round(rounds[-1]) if rounds else None

    def verify_round(self, server_round: int) -> list[str]:
        """Check a committed round end to end (signature, hashes, decryption); names what it checked."""
        committed = self.load_round(server_round)
        for name in committed.manifest["objects"]:
            ref = committed.ref(name)
            data, meta = self.store.get_with_metadata(ref.key)
            envelope.open_sealed(envelope.Sealed(data, meta), self.ring, self._where(ref), ref.sha256)
        return sorted(committed.manifest["objects"])

    def rewrap_round(self, server_round: int) -> int:
        """Re-wrap each object's data key under the current master key; payloads are untouched."""
        committed = self.load_round(server_round)
        current, _ = self.ring.current_kek()
        changed = 0
        for name in committed.manifest["objects"]:
            ref = committed.ref(name)
            meta = self.store.metadata(ref.key)
            if meta.get("primia-kid") == current:
                continue
            header = {k: v for k, v in meta.items() if k.startswith("primia-")}
            self.store.replace_metadata(ref.key, envelope.rewrap(header, self.ring, self._where(ref)))
            changed += 1
        return changed

    # ----------------------------------------------------------------- retention
    def pins(self) -> set[int]:
        """Rounds pinned by name (a registered model's round): retention never deletes them."""
        return {int(i.key.rsplit("/", 1)[-1].split(".")[0]) for i in self.store.list(f"{self.prefix}pins/")}

    def pin(self, server_round: int, reason: str) -> None:
        self.store.put(f"{self.prefix}pins/{server_round:05d}.json", json.dumps({"reason": reason}).encode())

    def apply_retention(self, keep_last: int, protect: set[int]) -> list[int]:
        """Delete committed rounds older than the last `keep_last`, except protected and pinned ones.
        The manifest goes first, so a round disappears whole; every version is removed."""
        if keep_last <= 0:
            return []
        rounds = self.committed_rounds()
        keep = set(rounds[-keep_last:]) | protect | self.pins()
        deleted = []
        for r in rounds:
            if r in keep:
                continue
            self.store.remove_all_versions(self.manifest_key(r))
            for info in self.store.list(self.round_prefix(r), versions=True):
                self.store.remove_all_versions(info.key)
            deleted.append(r)
        return deleted
