"""The CLI against the live stack: bad data is one line before any run starts; a good run prints
test metrics and where everything is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra import stack
from primia.cli import app
from tests.helpers import assert_one_line_error
from tests.integration.conftest import federation_raw

pytestmark = pytest.mark.integration
runner = CliRunner()


def _config(tmp_path: Path, raw: dict[str, object]) -> Path:
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unreadable_image_in_a_hospital(live_stack: stack.StackState, federation_dirs: Path, tmp_path: Path) -> None:
    broken = tmp_path / "h-broken"
    shutil.copytree(federation_dirs / "h1", broken)
    (broken / "class0" / "zz-broken.png").write_bytes(b"not an image")
    raw = federation_raw(federation_dirs, "it-bad")
    raw["hospitals"][0]["data"]["path"] = str(broken)  # type: ignore[index]
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(_config(tmp_path, raw))]), "zz-broken.png")


def test_missing_hospital_folder(live_stack: stack.StackState, federation_dirs: Path, tmp_path: Path) -> None:
    raw = federation_raw(federation_dirs, "it-missing")
    raw["hospitals"][1]["data"]["path"] = str(tmp_path / "gone")  # type: ignore[index]
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(_config(tmp_path, raw))]),
              f"hospital h2: data path {tmp_path / 'gone'} does not exist")


def test_train_json(live_stack: stack.StackState, federation_dirs: Path, tmp_path: Path) -> None:
    raw = federation_raw(federation_dirs, "it-cli", rounds=1)
    result = runner.invoke(app, ["train", "--config", str(_config(tmp_path, raw)), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["federated"]["federation_id"] == "it-cli"
    assert summary["federated"]["checkpoint"]["bucket"] == "primia-checkpoints"


@pytest.mark.slow
def test_bench_round_json(live_stack: stack.StackState) -> None:
    result = runner.invoke(app, ["bench", "round", "--rounds", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["hospitals"] == 3 and out["rounds"] == 3
    assert out["round_s_median"] >= out["local_train_s_median"] > 0
    assert out["overhead_s_median"] == pytest.approx(out["round_s_median"] - out["local_train_s_median"], abs=0.5)
