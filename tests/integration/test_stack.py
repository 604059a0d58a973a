"""The local stack: health, credentials kept 0600 and out of state, S3 auth enforced."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra import stack
from primia.config import S3Settings, load_settings
from primia.errors import StoreError
from primia.store.s3 import ObjectStore

pytestmark = pytest.mark.integration


def test_all_services_healthy(live_stack: stack.StackState) -> None:
    status = stack.status(Path(live_stack.home))
    assert set(status) == {"s3", "prefect", "mlflow"}
    assert all(row["healthy"] for row in status.values()), status
    assert all(str(row["url"]).startswith("http://127.0.0.1:") for row in status.values())


def test_up_is_idempotent(live_stack: stack.StackState) -> None:
    before = stack.load_state(Path(live_stack.home))
    again = stack.up(Path(live_stack.home))
    assert before is not None and again.pids == before.pids  # nothing restarted


def test_credentials_private_and_not_in_state(live_stack: stack.StackState) -> None:
    root = stack.stack_dir(Path(live_stack.home))
    creds = root / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    secret = json.loads(creds.read_text())["secret_key"]
    assert secret not in (root / "state.json").read_text()


def test_wrong_secret_is_rejected(live_stack: stack.StackState) -> None:
    good = load_settings().s3
    ObjectStore(good).put("auth-check", b"ok")
    bad = S3Settings(endpoint=good.endpoint, access_key=good.access_key, secret_key="wrong-secret")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="rejected the credentials"):
        ObjectStore(bad).get("auth-check")
    with pytest.raises(StoreError, match="rejected the credentials"):
        ObjectStore(bad).put("auth-check", b"overwrite")
    assert ObjectStore(good).get("auth-check") == b"ok"  # nothing stored was touched


def test_anonymous_request_is_rejected(live_stack: stack.StackState) -> None:
    url = f"{live_stack.urls['s3']}/{live_stack.buckets['checkpoints']}/auth-check"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=5)
    assert info.value.code in (401, 403)
