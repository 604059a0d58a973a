"""The hospital registry on the real Prefect server, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra import stack
from primia.cli import app
from tests.helpers import assert_one_line_error

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_register_list_revoke(live_stack: stack.StackState, tmp_path: Path) -> None:
    from tasks.registry import active_hospitals, list_hospitals

    for name in ("reg-a", "reg-b"):
        result = runner.invoke(app, ["hospital", "register", name, "--keys-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert f"work pool hospital-{name}" in result.output
    wrong = runner.invoke(app, ["hospital", "register", "reg-c", "--keys-dir", str(tmp_path / "reg-a")])
    assert_one_line_error(wrong, "belongs to hospital 'reg-a', not 'reg-c'")
    again = runner.invoke(app, ["hospital", "register", "reg-a", "--keys-dir", str(tmp_path / "reg-a")])
    assert_one_line_error(again, "already registered")
    records = {r.hospital: r for r in list_hospitals()}
    assert records["reg-a"].status == "active" and records["reg-a"].work_pool == "hospital-reg-a"
    assert str(tmp_path) not in str(records["reg-a"].model_dump())  # no hospital-local path at the coordinator
    assert runner.invoke(app, ["hospital", "revoke", "reg-b"]).exit_code == 0
    assert "reg-b" not in active_hospitals() and "reg-a" in active_hospitals()
    listing = runner.invoke(app, ["hospital", "list"])
    assert "revoked" in listing.output and "reg-a" in listing.output
    assert_one_line_error(runner.invoke(app, ["hospital", "revoke", "nobody"]), "is not registered")
