"""Retry policy of the object store: transient failures retried with backoff and logged once each;
auth errors and missing objects not retried; the total time is bounded."""

from __future__ import annotations

import logging
import time

import pytest
import urllib3
from minio.error import S3Error

from primia.config import S3Settings, StoreSettings
from primia.errors import StoreError
from primia.store.s3 import ObjectStore, is_transient


def _store(retry_seconds: float = 5.0) -> ObjectStore:
    settings = S3Settings(endpoint="127.0.0.1:9", access_key="a", secret_key="b")  # type: ignore[arg-type]
    return ObjectStore(settings, "bucket", StoreSettings(retry_seconds=retry_seconds))


def _s3_error(code: str, status: int) -> S3Error:
    resp = urllib3.HTTPResponse(status=status)
    return S3Error(resp, code, "msg", "/k", "req", "host")  # type: ignore[arg-type]


def test_classification() -> None:
    assert is_transient(urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    assert is_transient(urllib3.exceptions.ProtocolError("reset"))
    assert is_transient(ConnectionResetError())
    assert is_transient(_s3_error("SlowDown", 503)) and is_transient(_s3_error("Whatever", 500))
    assert not is_transient(_s3_error("SignatureDoesNotMatch", 403))
    assert not is_transient(_s3_error("NoSuchKey", 404))


def test_transient_failures_are_retried_and_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise urllib3.exceptions.ProtocolError("connection reset")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="primia.store"):
        assert _store()._call("put", "k", flaky) == "ok"
    assert calls == [1, 2, 3]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "s3://bucket/k" in retries[0].getMessage()


@pytest.mark.parametrize("code,status,needle", [("SignatureDoesNotMatch", 403, "rejected the credentials"),
                                                 ("NoSuchKey", 404, "does not exist")])
def test_permanent_errors_are_not_retried(code: str, status: int, needle: str) -> None:
    calls = []

    def fail(attempt: int) -> None:
        calls.append(attempt)
        raise _s3_error(code, status)

    with pytest.raises(StoreError, match=needle):
        _store()._call("get", "k", fail)
    assert calls == [1]


def test_total_retry_time_is_bounded() -> None:
    def refused(_: int) -> None:
        raise ConnectionRefusedError()

    start = time.monotonic()
    with pytest.raises(StoreError, match="unreachable on put .* gave up after 1 s"):
        _store(retry_seconds=1.0)._call("put", "k", refused)
    assert time.monotonic() - start < 6


class _LostResponse:
    """A minio client whose first upload lands on the server but whose response is lost on the way back."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, str]] = {}
        self.puts = 0

    def put_object(self, bucket: str, key: str, data: object, length: int, content_type: str = "",
                   metadata: dict[str, str] | None = None) -> object:
        self.puts += 1
        self.objects[key] = {f"X-Amz-Meta-{k}": v for k, v in (metadata or {}).items()}
        if self.puts == 1:
            raise urllib3.exceptions.ProtocolError("connection reset after the upload")
        return type("Result", (), {"etag": "e"})()

    def stat_object(self, bucket: str, key: str) -> object:
        if key not in self.objects:
            raise _s3_error("NoSuchKey", 404)
        return type("Stat", (), {"metadata": self.objects[key]})()


@pytest.mark.parametrize("once", [True, False])
def test_a_manifest_is_written_once_even_when_the_first_response_is_lost(once: bool) -> None:
    """The retry after a lost response finds the object with the same sha256 and does not write it again
    (a second write would be a second version of the manifest); without `once` it would."""
    store = _store()
    client = _LostResponse()
    store._client = client  # type: ignore[assignment]
    result = store.put("federations/f/rounds/00001/manifest.json", b"signed", metadata={"sha256": "abc"}, once=once)
    assert client.puts == (1 if once else 2)
    assert (result == "already-written") is once
