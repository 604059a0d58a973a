"""In-memory stand-ins for unit tests only (integration tests use the real servers)."""

from __future__ import annotations

from collections.abc import Iterator

from primia.errors import StoreError
from primia.store import digest as dg
from primia.store.s3 import ObjectInfo, Upload


class MemoryObjectStore:
    """Quacks like `primia.store.s3.ObjectStore` (latest versions only), keeps objects in a dict."""

    def __init__(self, bucket: str = "test-bucket") -> None:
        self.bucket = bucket
        self.endpoint = "memory"
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, str]] = {}

    def ensure_bucket(self, versioning: bool = True) -> None:
        pass

    def put(self, key: str, data: bytes | memoryview | Upload, metadata: dict[str, str] | None = None,
            once: bool = False) -> str:
        if isinstance(data, Upload):  # read part by part, as the S3 client does
            reader = data.reader()
            data = b"".join(iter(lambda: reader.read(5 << 20), b""))
        self.objects[key] = bytes(data)
        self.meta[key] = {k.lower(): v for k, v in (metadata or {}).items()}
        return "etag"

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str]]:
        if key not in self.objects:
            raise StoreError(f"object store: s3://{self.bucket}/{key} does not exist")
        return self.objects[key], dict(self.meta[key])

    def get(self, key: str) -> bytes:
        return self.get_with_metadata(key)[0]

    def get_hashed(self, key: str, like: str | None = None) -> tuple[bytearray, dict[str, str], str]:
        data, meta = self.get_with_metadata(key)
        return bytearray(data), meta, dg.of(data, like)

    def metadata(self, key: str) -> dict[str, str]:
        return dict(self.get_with_metadata(key)[1])

    def try_metadata(self, key: str) -> dict[str, str] | None:
        return dict(self.meta[key]) if key in self.meta else None

    def replace_metadata(self, key: str, metadata: dict[str, str]) -> None:
        self.meta[key] = dict(metadata)

    def list(self, prefix: str = "", versions: bool = False) -> Iterator[ObjectInfo]:
        for k in sorted(self.objects):
            if k.startswith(prefix):
                yield ObjectInfo(k, len(self.objects[k]), "etag")

    def remove_all_versions(self, key: str) -> int:
        existed = key in self.objects
        self.objects.pop(key, None)
        self.meta.pop(key, None)
        return int(existed)

    def exists(self, key: str) -> bool:
        return key in self.objects
