"""In-memory stand-ins for unit tests only (integration tests use the real servers)."""

from __future__ import annotations

from collections.abc import Iterator

from primia.errors import StoreError
from primia.store.s3 import ObjectInfo


class MemoryObjectStore:
    """Quacks like `primia.store.s3.ObjectStore`, keeps objects in a dict."""

    def __init__(self, bucket: str = "test-bucket") -> None:
        self.bucket = bucket
        self.endpoint = "memory"
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, str]] = {}

    def ensure_bucket(self) -> None:
        pass

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        self.objects[key] = bytes(data)
        self.meta[key] = dict(metadata or {})
        return "etag"

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise StoreError(f"object store: s3://{self.bucket}/{key} does not exist")
        return self.objects[key]

    def metadata(self, key: str) -> dict[str, str]:
        return self.meta[key]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for k in sorted(self.objects):
            if k.startswith(prefix):
                yield ObjectInfo(k, len(self.objects[k]), "etag")
