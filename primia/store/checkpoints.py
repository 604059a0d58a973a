"""Federation checkpoints in the object store: global weights per round and hospital updates.

Layout: federations/<id>/rounds/<round:05d>/global.safetensors
        federations/<id>/rounds/<round:05d>/updates/<hospital>.safetensors
Objects are addressed by `CheckpointRef` (bucket, key, sha256, round) and verified on read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from primia.errors import StoreError
from primia.messages import CheckpointRef
from primia.store import weights as wcodec
from primia.store.s3 import ObjectStore
from primia.store.weights import Weights


class _BytesCache:
    """A small LRU of recently written or read payloads, keyed by sha256.

    In embedded mode coordinator and hospitals share a process; this saves a download per
    hospital per round without weakening anything: reads still check the sha256.
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


class CheckpointStore:
    def __init__(self, store: ObjectStore, federation_id: str) -> None:
        self.store = store
        self.federation_id = federation_id
        self._cache = _BytesCache()

    def round_prefix(self, server_round: int) -> str:
        return f"federations/{self.federation_id}/rounds/{server_round:05d}/"

    def key_for(self, server_round: int, hospital: str | None = None) -> str:
        leaf = f"updates/{hospital}.safetensors" if hospital else "global.safetensors"
        return self.round_prefix(server_round) + leaf

    def put_weights(self, server_round: int, weights: Weights, hospital: str | None = None) -> CheckpointRef:
        meta = {"federation": self.federation_id, "round": str(server_round), "hospital": hospital or ""}
        data = wcodec.encode(weights, metadata=meta)
        digest = wcodec.sha256(data)
        key = self.key_for(server_round, hospital)
        self.store.put(key, data, metadata={"sha256": digest, "round": str(server_round)})
        self._cache.put(digest, data)
        return CheckpointRef(self.store.bucket, key, digest, server_round)

    def get_weights(self, ref: CheckpointRef) -> Weights:
        if ref.bucket != self.store.bucket:
            raise StoreError(f"checkpoint {ref.key} is in bucket {ref.bucket}, expected {self.store.bucket}")
        data = self._cache.get(ref.sha256)
        if data is None:
            data = self.store.get(ref.key)
            if wcodec.sha256(data) != ref.sha256:
                raise StoreError(f"checkpoint s3://{ref.bucket}/{ref.key} failed its sha256 check")
            self._cache.put(ref.sha256, data)
        return wcodec.decode(data, what=f"checkpoint s3://{ref.bucket}/{ref.key}")
