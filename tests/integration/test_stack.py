"""The local stack: health, credentials kept 0600 and out of state, S3 auth enforced, Prefect and MLflow
on a real PostgreSQL server (SQLite as the fallback)."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra import postgres, stack
from primia.config import S3Settings, load_settings
from primia.errors import StoreError
from primia.store.s3 import ObjectStore

pytestmark = pytest.mark.integration


def _needs_postgresql(live_stack: stack.StackState) -> None:
    """Where PostgreSQL can run, the session's stack must be on it; where it cannot (root without user
    namespaces), the stack fell back to SQLite and these tests say so instead of passing."""
    why = postgres.available()
    if why:
        pytest.skip(f"PostgreSQL cannot run on this machine: {why}")
    assert live_stack.database == "postgresql"


def test_all_services_healthy(live_stack: stack.StackState) -> None:
    status = stack.status(Path(live_stack.home))
    assert set(status) == {"s3", "prefect", "mlflow"} | ({"postgres"} if live_stack.database == "postgresql" else set())
    assert all(row["healthy"] for row in status.values()), status
    assert all(str(row["url"]).split("://")[1].startswith("127.0.0.1:") for row in status.values())


def _pg(live_stack: stack.StackState, password: str, database: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=live_stack.ports["postgres"], user=postgres.USER,
                           password=password, dbname=database, connect_timeout=5)


def test_prefect_and_mlflow_keep_their_state_in_postgresql(live_stack: stack.StackState) -> None:
    """Not SQLite files: the servers' tables live in PostgreSQL and grow as the servers work."""
    _needs_postgresql(live_stack)
    root = stack.stack_dir(Path(live_stack.home))
    assert live_stack.database == "postgresql"
    assert not (root / "prefect" / "prefect.db").exists() and not (root / "mlflow" / "mlflow.db").exists()
    password = postgres.password(root)
    with _pg(live_stack, password, "prefect") as conn:
        assert conn.execute("SELECT count(*) FROM flow").fetchone() is not None  # Prefect's schema is there
    with _pg(live_stack, password, "mlflow") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM experiments")}
    assert "Default" in names  # MLflow migrated its schema into PostgreSQL
    with _pg(live_stack, password, "mlflow_auth") as conn:
        users = {r[0] for r in conn.execute("SELECT username FROM users")}
    assert stack.credentials(Path(live_stack.home))["mlflow_username"] in users


def test_prefect_and_mlflow_log_in_as_their_own_roles_without_superuser_powers(live_stack: stack.StackState) -> None:
    _needs_postgresql(live_stack)
    import psycopg

    root = stack.stack_dir(Path(live_stack.home))
    with _pg(live_stack, postgres.password(root), "prefect") as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'flow'").fetchone() == ("prefect",)
    with _pg(live_stack, postgres.password(root), "mlflow") as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'experiments'").fetchone() \
            == ("mlflow",)
    for role, database in (("prefect", "prefect"), ("mlflow", "mlflow")):
        with psycopg.connect(host="127.0.0.1", port=live_stack.ports["postgres"], user=role,
                             password=postgres.password(root, role), dbname=database, connect_timeout=5) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")  # a superuser could run commands as the server
        other = "mlflow" if role == "prefect" else "prefect"
        with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
            psycopg.connect(host="127.0.0.1", port=live_stack.ports["postgres"], user=role,
                            password=postgres.password(root, role), dbname=other, connect_timeout=5).close()


def test_postgresql_asks_for_the_password_and_hides_it(live_stack: stack.StackState) -> None:
    _needs_postgresql(live_stack)
    import psycopg

    root = stack.stack_dir(Path(live_stack.home))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _pg(live_stack, "wrong-password").close()
    assert stat.S_IMODE((root / "postgres.json").stat().st_mode) == 0o600
    for role in ("primia", "prefect", "mlflow"):
        password = postgres.password(root, role)
        for name in ("postgres", "prefect", "mlflow"):  # never on a command line that `ps` shows
            argv = Path(f"/proc/{live_stack.pids[name]}/cmdline").read_bytes().decode(errors="replace")
            assert password not in argv, (role, name)
        assert password not in (root / "state.json").read_text()
        for log in ("postgres", "prefect", "mlflow"):
            assert password not in (root / "logs" / f"{log}.log").read_text(errors="replace"), (role, log)


@pytest.mark.slow
def test_sqlite_fallback_starts_without_postgresql(tmp_path: Path) -> None:
    state = stack.up(tmp_path, database="sqlite")
    try:
        assert state.database == "sqlite" and "postgres" not in state.pids
        status = stack.status(tmp_path)
        assert set(status) == {"s3", "prefect", "mlflow"} and all(r["healthy"] for r in status.values()), status
        assert (stack.stack_dir(tmp_path) / "prefect" / "prefect.db").exists()
    finally:
        stack.down(tmp_path)
    assert not any(os.path.exists(f"/proc/{pid}") and stack.alive(pid) for pid in state.pids.values())


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
