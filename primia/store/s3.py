"""A thin S3 client over the MinIO SDK: bytes in, bytes out, clear errors.

Everything that reads or writes the object store goes through `ObjectStore` so that encryption,
retries and integrity checks (later issues) have one place to live.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.error import S3Error

from primia.config import S3Settings
from primia.errors import ConfigError, StoreError

AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidSecretKey"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore:
    def __init__(self, settings: S3Settings, bucket: str | None = None) -> None:
        if settings.access_key is None or settings.secret_key is None:
            raise ConfigError(
                "object store credentials are not set: start the local stack (`primia stack up`) or set "
                "PRIMIA_S3__ACCESS_KEY and PRIMIA_S3__SECRET_KEY"
            )
        self.endpoint = settings.endpoint
        self.bucket = bucket or settings.bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60), maxsize=16,
            retries=urllib3.Retry(total=0),  # retry policy belongs to us (tenacity), not the transport
        )
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key.get_secret_value(),
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    def _fail(self, action: str, key: str, exc: Exception) -> StoreError:
        if isinstance(exc, S3Error):
            if exc.code in AUTH_CODES:
                return StoreError(f"object store at {self.endpoint} rejected the credentials ({exc.code}) on {action}")
            return StoreError(f"object store: {action} s3://{self.bucket}/{key} failed: {exc.code}")
        return StoreError(f"object store at {self.endpoint} unreachable on {action} ({type(exc).__name__})")

    def ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise self._fail("create bucket", "", exc) from None

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """Upload bytes; returns the ETag."""
        try:
            res = self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data),
                content_type="application/octet-stream", metadata=metadata,  # type: ignore[arg-type]
            )
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise self._fail("put", key, exc) from None
        return res.etag

    def get(self, key: str) -> bytes:
        try:
            resp = self._client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise StoreError(f"object store: s3://{self.bucket}/{key} does not exist") from None
            raise self._fail("get", key, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._fail("get", key, exc) from None

    def metadata(self, key: str) -> dict[str, str]:
        try:
            st = self._client.stat_object(self.bucket, key)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise self._fail("stat", key, exc) from None
        prefix = "x-amz-meta-"
        return {k[len(prefix):].lower(): v for k, v in (st.metadata or {}).items() if k.lower().startswith(prefix)}

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                yield ObjectInfo(obj.object_name or "", obj.size or 0, obj.etag or "")
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise self._fail("list", prefix, exc) from None
