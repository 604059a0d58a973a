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


def test_password_is_made_once_and_private(tmp_path: Path) -> None:
    first = postgres.password(tmp_path)
    assert len(first) >= 24 and postgres.password(tmp_path) == first
    assert (tmp_path / "postgres.json").stat().st_mode & 0o777 == 0o600


def test_an_unknown_database_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="postgresql, sqlite"):
        stack.up(tmp_path, database="mysql")
    assert not (tmp_path / "stack").exists()
