"""Enrolment on the real stack through the CLI: the signed roster is what counts, the Prefect blocks
are its read-only view, and each hospital gets its own bucket and S3 identity."""

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
    from primia import runtime
    from tasks.registry import list_view

    for name in ("reg-a", "reg-b"):
        result = runner.invoke(app, ["hospital", "register", name, "--keys-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert f"work pool hospital-{name}" in result.output and f"bucket primia-h-{name}" in result.output
        assert (tmp_path / name / "s3.json").stat().st_mode & 0o077 == 0  # its own S3 identity, private
    wrong = runner.invoke(app, ["hospital", "register", "reg-c", "--keys-dir", str(tmp_path / "reg-a")])
    assert_one_line_error(wrong, "belongs to hospital 'reg-a', not 'reg-c'")
    runtime.reset()
    roster = runtime.roster()
    assert roster.hospitals["reg-a"].status == "active" and roster.hospitals["reg-a"].pool == "hospital-reg-a"
    assert str(tmp_path) not in str(roster.body())  # no hospital-local path at the coordinator
    version = roster.version
    assert runner.invoke(app, ["hospital", "revoke", "reg-b"]).exit_code == 0
    runtime.reset()
    roster = runtime.roster()
    assert roster.version == version + 1 and "reg-b" not in roster.active() and "reg-a" in roster.active()
    view = {b.hospital: b for b in list_view()}  # the UI's view follows the signed roster
    assert view["reg-b"].status == "revoked" and view["reg-b"].roster_version == roster.version
    listing = runner.invoke(app, ["hospital", "list"])
    assert "revoked" in listing.output and "reg-a" in listing.output and "verified" in listing.output
    assert_one_line_error(runner.invoke(app, ["hospital", "revoke", "nobody"]), "is not on the roster")
