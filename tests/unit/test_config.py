"""Settings and federation config: valid files load, invalid values name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from primia.config import config_to_params, load_federation_config, load_settings, parse_federation_config
from primia.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _raw(**over: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "federation_id": "fed-1",
        "hospitals": [{"name": "a", "data": {"path": "/x"}}, {"name": "b", "data": {"path": "/y"}}],
        "test_data": {"path": "/t"},
    }
    raw.update(over)
    return raw


def test_example_and_demo_configs_load() -> None:
    ex = load_federation_config(ROOT / "configs" / "federation.example.yaml")
    assert ex.model.name == "resnet18" and len(ex.hospitals) == 3
    demo = load_federation_config(ROOT / "configs" / "demo.yaml")
    assert demo.class_names == ("no", "yes") and demo.hospitals[0].data.path.is_absolute()


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"rounds": 0}, "field rounds: Input should be greater than or equal to 1"),
        ({"model": {"name": "vgg"}}, "field model.name: Input should be 'small_cnn', 'resnet18' or 'densenet121'"),
        ({"federation_id": "Bad Id"}, "field federation_id: String should match pattern"),
        ({"training": {"lr": -1}}, "field training.lr"),
        ({"training": {"optimiser": "adam"}}, "field training.optimiser: Extra inputs are not permitted"),
        ({"policy": {"min_hospitals": 0}}, "field policy.min_hospitals: Input should be greater than or equal to 1"),
        ({"class_names": ["a", "b", "c"]}, "class_names has 3 entries but model.num_classes is 2"),
    ],
)
def test_invalid_values_name_the_field(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_federation_config(_raw(**over), "cfg.yaml")
    assert needle in str(info.value) and str(info.value).startswith("cfg.yaml: ")
    assert "\n" not in str(info.value)


def test_duplicate_hospitals() -> None:
    raw = _raw(hospitals=[{"name": "a", "data": {"path": "/x"}}, {"name": "a", "data": {"path": "/y"}}])
    with pytest.raises(ConfigError, match="hospital names must be unique, repeated: a"):
        parse_federation_config(raw)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_federation_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_federation_config(tmp_path / "bad.yaml")


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "federation_id: f\nhospitals: [{name: a, data: {path: data/a}}]\ntest_data: {path: ../t}\n")
    cfg = load_federation_config(tmp_path / "c.yaml")
    assert cfg.hospitals[0].data.path == tmp_path / "data" / "a"


def test_params_leave_out_paths() -> None:
    params = config_to_params(parse_federation_config(_raw()))
    assert params["hospitals"] == "a,b" and params["model.name"] == "small_cnn"
    assert not any("/x" in v for v in params.values())


def test_settings_env_nesting_and_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRIMIA_HOME", str(tmp_path))
    monkeypatch.setenv("PRIMIA_S3__ENDPOINT", "s3.example:9000")
    monkeypatch.setenv("PRIMIA_S3__SECRET_KEY", "topsecret")
    s = load_settings()
    assert s.s3.endpoint == "s3.example:9000"
    assert "topsecret" not in repr(s) and s.s3.secret_key is not None
    assert s.s3.secret_key.get_secret_value() == "topsecret"
    monkeypatch.setenv("PRIMIA_S3__BUCKET", "X")
    with pytest.raises(ConfigError, match="field PRIMIA_s3.bucket"):
        load_settings()


def test_differential_privacy_is_on_unless_said_off() -> None:
    cfg = parse_federation_config(_raw())
    assert cfg.privacy.mode == "sample" and cfg.privacy.enabled and cfg.local_spec().privacy.mode == "sample"
    assert not parse_federation_config(_raw(privacy={"mode": "off"})).privacy.enabled


@pytest.mark.parametrize(("over", "needle"), [
    ({"strategy": {"name": "fedprox"}}, "proximal term is not clipped per sample"),
    ({"training": {"class_weighting": True}}, "label counts"),
    ({"privacy": {"mode": "client"}, "secure_aggregation": {"enabled": False}}, "without secure aggregation"),
    ({"privacy": {"noise_multiplier": 0}}, "field privacy.noise_multiplier"),
    ({"privacy": {"delta": 1}}, "field privacy.delta"),
    ({"privacy": {"max_grad_norm": 0}}, "field privacy.max_grad_norm"),
])
def test_private_training_that_would_not_hold_is_refused(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_federation_config(_raw(**over), "cfg.yaml")
