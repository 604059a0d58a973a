"""Federation checkpoints in the object store: encrypted objects, signed manifests, atomic rounds.

Layout: federations/<id>/rounds/<round:05d>/<name>.enc   (global.safetensors, state.json, ...,
        updates/<hospital>.safetensors) and .../manifest.json, written last, signed.
Objects are addressed by `CheckpointRef` (bucket, key, digest of the stored bytes, round);
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
from primia.store import digest as dg
from primia.store import envelope, history, manifest
from primia.store import weights as wcodec
from primia.store.keys import KeyRing
from primia.store.s3 import ObjectStore
from primia.store.weights import Weights

_ROUND_RE = re.compile(r"/rounds/(\d{5})/manifest\.json$")
_IN_ROUND_RE = re.compile(r"/rounds/(\d{5})/")
PRIVATE_ROUND = -1  # the associated data of a party's own state: no round


def _round_of(key: str) -> int:
    m = _IN_ROUND_RE.search(key)
    if m is None:
        raise StoreError(f"object {key} is not inside a round's folder")
    return int(m.group(1))


class _PlainCache:
    """Plaintexts of objects this process wrote or verified, keyed by the whole reference (bucket, key,
    round and the stored bytes' digest): keyed by the digest alone, a reference naming one object with
    another's digest got the other's plaintext from here, past the location the encryption binds.

    In embedded mode coordinator and hospitals share a process; this saves a download and a
    decryption per hospital per round. Only verified or self-written bytes enter it.
    """

    def __init__(self, capacity: int = 32) -> None:
        self._items: OrderedDict[CheckpointRef, bytes | memoryview] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, ref: CheckpointRef) -> bytes | memoryview | None:
        with self._lock:
            data = self._items.get(ref)
            if data is not None:
                self._items.move_to_end(ref)
            return data

    def put(self, ref: CheckpointRef, data: bytes | memoryview) -> None:
        with self._lock:
            self._items[ref] = data
            self._items.move_to_end(ref)
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
        return CheckpointRef(entry["bucket"], entry["key"], dg.from_entry(entry), self.round)


class CheckpointStore:
    """`verify_key`: the coordinator's public key that manifests must verify under (a hospital takes it
    from the signed roster and holds no signing key); default: the key ring's own signing key."""

    def __init__(self, store: ObjectStore, federation_id: str, ring: KeyRing,
                 verify_key: Ed25519PublicKey | None = None, memory: history.Memory | None = None) -> None:
        self.store = store
        self.federation_id = federation_id
        self.ring = ring
        self._verify_key = verify_key
        self.memory = memory  # the coordinator's own record of the newest head it wrote
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

    @property
    def head_key(self) -> str:
        return f"{self.prefix}head.json"

    def _where(self, ref: CheckpointRef) -> envelope.Location:
        return envelope.Location(ref.bucket, ref.key, self.federation_id, ref.round)

    # ----------------------------------------------------------------- objects
    def put_object(self, server_round: int, name: str, plaintext: bytes) -> CheckpointRef:
        key = self.key_for(server_round, name)
        where = envelope.Location(self.store.bucket, key, self.federation_id, server_round)
        sealed = envelope.SealingStream(plaintext, self.ring, where)
        self.store.put(key, sealed, metadata=sealed.header)
        digest = sealed.digest()
        ref = CheckpointRef(self.store.bucket, key, digest, server_round)
        self._cache.put(ref, plaintext)
        return ref

    def get_object(self, ref: CheckpointRef) -> bytes | memoryview:
        """The verified plaintext: bytes this process wrote, or a read-only view of the decrypted download."""
        if ref.bucket != self.store.bucket:
            raise StoreError(f"checkpoint {ref.key} is in bucket {ref.bucket}, expected {self.store.bucket}")
        plain: bytes | memoryview | None = self._cache.get(ref)
        if plain is None:
            data, meta, digest = self.store.get_hashed(ref.key, like=ref.digest)
            plain = envelope.open_downloaded(data, meta, digest, self.ring, self._where(ref), ref.digest)
            self._cache.put(ref, plain)
        return plain

    def put_weights(self, server_round: int, weights: Weights, hospital: str | None = None) -> CheckpointRef:
        name = f"updates/{hospital}.safetensors" if hospital else "global.safetensors"
        return self.put_object(server_round, name, wcodec.encode(weights))

    def get_weights(self, ref: CheckpointRef) -> Weights:
        return wcodec.decode(self.get_object(ref), what=f"checkpoint s3://{ref.bucket}/{ref.key}")

    def put_json(self, server_round: int, name: str, data: dict[str, Any]) -> CheckpointRef:
        return self.put_object(server_round, name, json.dumps(data, sort_keys=True).encode())

    def get_json(self, ref: CheckpointRef) -> dict[str, Any]:
        return json.loads(bytes(self.get_object(ref)))

    def find_json(self, server_round: int, name: str) -> dict[str, Any] | None:
        """A JSON object looked up by name (None if absent), authenticated by its GCM tag and location."""
        data = self.find_object(server_round, name)
        return None if data is None else json.loads(data)

    def find_object(self, server_round: int, name: str) -> bytes | None:
        """An object's plaintext looked up by name (None if absent), authenticated like get_object."""
        return self._find_sealed(self.key_for(server_round, name), server_round)

    def private_key(self, name: str) -> str:
        return f"{self.prefix}private/{name}.enc"

    def put_private_json(self, name: str, data: dict[str, Any]) -> None:
        """A party's own state outside the rounds (retention never touches it), encrypted and bound to its
        name like any checkpoint; overwritten in place (a versioned bucket keeps the history)."""
        key = self.private_key(name)
        sealed = envelope.seal(json.dumps(data, sort_keys=True).encode(), self.ring,
                               envelope.Location(self.store.bucket, key, self.federation_id, PRIVATE_ROUND))
        self.store.put(key, sealed.ciphertext, metadata=sealed.header)

    def find_private_json(self, name: str) -> dict[str, Any] | None:
        data = self._find_sealed(self.private_key(name), PRIVATE_ROUND)
        return None if data is None else json.loads(data)

    def _find_sealed(self, key: str, server_round: int) -> bytes | None:
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
    def commit(self, server_round: int, refs: dict[str, CheckpointRef],
               privacy: dict[str, Any] | None = None) -> CommittedRound:
        """Write the signed manifest last (from now on the round is visible, exactly once), chained to
        the previous one, then the signed head that names it. `privacy`: the round's privacy statement."""
        objects = {name: {"bucket": r.bucket, "key": r.key, "digest": r.digest} for name, r in sorted(refs.items())}
        head = self.head()
        body = manifest.build(self.federation_id, server_round, objects, head.manifest if head else None,
                              head.counter + 1 if head else 1)
        if privacy is not None:
            body["privacy"] = privacy
        raw = manifest.sign(body, self.ring)
        self.store.put(self.manifest_key(server_round), raw, metadata={"sha256": wcodec.sha256(raw)}, once=True)
        self._write_head(history.Head(server_round, body["counter"], history.digest(raw)))
        return CommittedRound(server_round, body)

    def _write_head(self, head: history.Head) -> None:
        _, key = self.ring.signer()
        self.store.put(self.head_key, history.sign_head(head, self.federation_id, key))
        if self.memory is not None:
            self.memory.remember(self.federation_id, head)

    def head(self) -> history.Head | None:
        """The signed head (None before the first commit)."""
        if not self.store.exists(self.head_key):
            return None
        return history.open_head(self.store.get(self.head_key), self.verify_key, self.federation_id,
                                 f"s3://{self.store.bucket}/{self.head_key}")

    def resume_round(self) -> CommittedRound | None:
        """The newest committed round, after checking the history is whole (signed head not gone
        backwards, no newest rounds deleted, the chain unbroken); a commit whose head write was lost
        (a crash between the two) is completed first."""
        manifests = {}
        for r in self.committed_rounds():
            raw = self.store.get(self.manifest_key(r))
            manifests[r] = (raw, self._verified(raw, r))
        head = self.head()
        remembered = self.memory.counter(self.federation_id) if self.memory else 0
        history.check_not_backwards(self.federation_id, head, remembered)  # before any repair writes a head
        if head is not None and head.round + 1 in manifests and max(manifests) == head.round + 1:
            raw, body = manifests[head.round + 1]
            if body.get("previous") == head.manifest and body.get("counter") == head.counter + 1:
                head = history.Head(head.round + 1, head.counter + 1, history.digest(raw))
                self._write_head(head)
        r = history.check_chain(self.federation_id, head, manifests, remembered)
        return CommittedRound(r, manifests[r][1]) if r >= 0 else None

    def _verified(self, raw: bytes, server_round: int) -> dict[str, Any]:
        where = f"s3://{self.store.bucket}/{self.manifest_key(server_round)}"
        return manifest.verify(raw, self.verify_key, where, self.federation_id, server_round)

    def committed_rounds(self) -> list[int]:
        rounds = []
        for info in self.store.list(f"{self.prefix}rounds/"):
            m = _ROUND_RE.search(info.key)
            if m:
                rounds.append(int(m.group(1)))
        return sorted(rounds)

    def load_round(self, server_round: int) -> CommittedRound:
        return CommittedRound(server_round, self._verified(self.store.get(self.manifest_key(server_round)),
                                                           server_round))

    def verify_committed(self, ref: CheckpointRef, name: str = "global.safetensors") -> None:
        """Raise unless `ref` is object `name` of its round's committed, signed manifest: what a hospital
        checks before it validates or trains on weights the coordinator points it to."""
        try:
            entry = self.load_round(ref.round).manifest["objects"].get(name)
        except StoreError as exc:
            raise IntegrityError(f"round {ref.round} of {self.federation_id} is not committed by a signed manifest "
                                 f"({exc}): refusing weights that are not a committed global model") from None
        if entry is None or (entry["bucket"], entry["key"], dg.from_entry(entry)) != (ref.bucket, ref.key, ref.digest):
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
            envelope.open_sealed(envelope.Sealed(data, meta), self.ring, self._where(ref), ref.digest)
        return sorted(committed.manifest["objects"])

    def rewrap_all(self) -> tuple[int, int]:
        """Re-wrap the data key of every encrypted object of the federation under the current master key
        (payloads untouched), then delete every older version of those objects, so a retired master key
        decrypts nothing that remains. Returns (objects re-wrapped, old versions deleted)."""
        current, _ = self.ring.current_kek()
        keys = sorted({i.key for i in self.store.list(self.prefix, versions=True)})
        changed = removed = 0
        for key in keys:
            meta = self.store.try_metadata(key)
            if meta is None or "primia-kid" not in meta:
                continue  # a manifest or head (signed, not encrypted), or a deleted object
            if meta["primia-kid"] != current:
                header = {k: v for k, v in meta.items() if k.startswith("primia-")}
                where = envelope.Location(self.store.bucket, key, self.federation_id, _round_of(key))
                self.store.replace_metadata(key, envelope.rewrap(header, self.ring, where))
                changed += 1
            removed += self.store.remove_old_versions(key)
        return changed, removed

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
