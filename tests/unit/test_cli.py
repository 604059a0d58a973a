"""The CLI explains itself and turns bad input into one line without a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from primia.cli import app
from tests.helpers import assert_one_line_error

runner = CliRunner()


def test_help_lists_commands() -> None:
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("stack", "train", "demo", "data", "bench"):
        assert cmd in out
    assert "up" in runner.invoke(app, ["stack", "--help"]).output


def test_bad_config_value(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("federation_id: f\nmodel: {name: vgg99}\nhospitals: [{name: a, data: {path: x}}]\n"
                   "test_data: {path: t}\n")
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "field model.name")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "no.yaml")]), "does not exist")


def test_inspect_missing_folder(tmp_path: Path) -> None:
    assert_one_line_error(runner.invoke(app, ["data", "inspect", str(tmp_path / "missing")]), "does not exist")


def test_inspect_reads_a_folder(tmp_path: Path) -> None:
    from primia.data.synthetic import make_synthetic, write_image_folder

    write_image_folder(make_synthetic(6, 2, 16), tmp_path)
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--image-size", "16"])
    assert result.exit_code == 0 and "6 images" in result.output


def test_train_without_stack(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PRIMIA_HOME", str(tmp_path / "nohome"))
    for var in ("PRIMIA_PREFECT__API_URL", "PRIMIA_MLFLOW__TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("federation_id: f\nhospitals: [{name: a, data: {path: x}}]\ntest_data: {path: t}\n")
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "the local stack is not running")


def test_empty_partition_at_the_cli(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare-br35h", "--out", str(tmp_path / "b"), "--hospitals", "5000"])
    assert_one_line_error(result, "into 5000 non-empty partitions")
    assert not (tmp_path / "b").exists()  # nothing half-written
