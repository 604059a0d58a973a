"""The registry's core without servers: gates, policy, model card, bootstrap intervals, the pyfunc's
input handling, and how an interrupted run ends."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from primia.config import ModelConfig
from primia.data.decode import decode_bytes, decode_image
from primia.data.transforms import preprocess
from primia.errors import ConfigError, DataError
from primia.models.factory import build_model
from primia.registry import card, gates
from primia.registry.policy import DEFAULT_POLICY, PromotionPolicy, load_policy
from primia.registry.pyfunc import ImageClassifier
from primia.store.weights import encode, state_to_numpy
from primia.training.confidence import bootstrap_ci

POLICY = PromotionPolicy.model_validate({"quality": {"tolerance": 0.02, "floor": 0.3},
                                         "privacy": {"max_epsilon": 8.0, "max_delta": 1e-5}})
DP = {"mode": "sample", "epsilon": 7.5, "delta": 1e-5, "accountant": "prv"}


def test_the_repository_policy_loads_and_bad_policies_name_the_field(tmp_path: Path) -> None:
    assert load_policy(DEFAULT_POLICY).privacy.require_dp is True
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("privacy: {max_epsilon: -1}\n")
    with pytest.raises(ConfigError, match="privacy.max_epsilon"):
        load_policy(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("quality: {flor: 0.2}\n")
    with pytest.raises(ConfigError, match="quality.flor"):
        load_policy(tmp_path / "typo.yaml")


def test_quality_gate_floor_and_champion_tolerance() -> None:
    assert gates.quality(POLICY, 0.5, None, None).passed
    assert not gates.quality(POLICY, 0.29, None, None).passed
    assert gates.quality(POLICY, 0.59, 0.6, "3").passed  # within the tolerance
    g = gates.quality(POLICY, 0.57, 0.6, "3")
    assert not g.passed and "champion v3" in g.reason and g.figures["champion_score"] == 0.6
    assert not gates.quality(POLICY, float("nan"), None, None).passed


def test_privacy_gate_fails_closed() -> None:
    assert gates.privacy(POLICY, DP).passed
    assert not gates.privacy(POLICY, None).passed
    assert not gates.privacy(POLICY, {"mode": "off"}).passed
    lax = POLICY.model_copy(update={"privacy": POLICY.privacy.model_copy(update={"require_dp": False})})
    assert gates.privacy(lax, {"mode": "off"}).passed
    assert "above the policy's budget" in gates.privacy(POLICY, DP | {"epsilon": 8.01}).reason
    assert not gates.privacy(POLICY, DP | {"delta": 1e-4}).passed
    assert not gates.privacy(POLICY, DP | {"epsilon": None}).passed
    tags = gates.privacy(POLICY, DP).tags()
    assert tags["primia.gate.privacy"] == "PASS" and tags["primia.gate.privacy.epsilon"] == "7.5"


def test_audit_gate_needs_a_passing_audit() -> None:
    assert "not audited" in gates.audit(POLICY, None).reason and not gates.audit(POLICY, None).passed
    assert not gates.audit(POLICY, "FAIL", "SSIM 0.9").passed
    assert gates.audit(POLICY, "PASS").passed
    relaxed = POLICY.model_copy(update={"audit": POLICY.audit.model_copy(update={"required": False})})
    assert gates.audit(relaxed, None).passed


def test_bootstrap_interval_known_answers() -> None:
    labels = np.array([0, 1] * 50)
    perfect = np.eye(2)[labels]
    ci = bootstrap_ci(labels, perfect, resamples=200)
    assert ci["mcc"] == pytest.approx((1.0, 1.0, 1.0)) and ci["accuracy"] == pytest.approx((1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    noisy = np.abs(perfect + rng.normal(0, 0.6, perfect.shape)) + 1e-6
    noisy /= noisy.sum(axis=1, keepdims=True)
    est, lo, hi = bootstrap_ci(labels, noisy, resamples=300)["mcc"]
    assert lo < est < hi and hi - lo > 0.05
    assert bootstrap_ci(labels, noisy, resamples=300)["mcc"] == (est, lo, hi)  # seeded
    with pytest.raises(ValueError, match="labels"):
        bootstrap_ci(labels[:3], noisy)


def test_card_renders_every_section() -> None:
    fields: dict[str, Any] = {"name": "fed", "version": "2", "status": "s", "privacy": card.privacy_section(DP),
                              "audit": card.audit_section(None), "gates": card.gates_section(None),
                              "metrics": card.metrics_section({"mcc": (0.5, 0.4, 0.6)}, 100)}
    text = card.render(fields)
    assert "# Privacy model card: fed v2" in text and "| mcc | 0.5 | [0.4, 0.6] |" in text
    assert card.NOT_AUDITED in text and "| epsilon (largest hospital) | 7.5 |" in text
    assert "Trained without differential privacy" in card.privacy_section({"mode": "off"})


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_bytes_matches_decode_image(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    arr = (np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg")):
        path = tmp_path / f"x{suffix}"
        Image.fromarray(arr).save(path, format=fmt)
        np.testing.assert_array_equal(decode_bytes(path.read_bytes()), decode_image(path))
    dcm = Path(get_testdata_file("RG1_UNCI.dcm"))  # type: ignore[arg-type]
    np.testing.assert_array_equal(decode_bytes(dcm.read_bytes()), decode_image(dcm))
    with pytest.raises(DataError, match="input 3: .*not a PNG, JPEG or DICOM"):
        decode_bytes(b"GIF89a" + bytes(200), "input 3")


def test_pyfunc_takes_bytes_base64_and_paths(tmp_path: Path) -> None:
    model = build_model(ModelConfig(), seed=0)
    clf = ImageClassifier()
    clf.load({"model": ModelConfig().model_dump(), "image_size": 32, "class_names": ["a", "b"]},
             encode(state_to_numpy(model.state_dict())))
    rng = np.random.default_rng(2)
    images = [(rng.random((50, 40)) * 255).astype(np.uint8) for _ in range(3)]
    raw = [_png(a) for a in images]
    (tmp_path / "one.png").write_bytes(raw[0])
    expected = clf.predict_arrays(np.stack([preprocess(a.astype(np.float32), 32) for a in images]))
    with_path = [str(tmp_path / "one.png"), raw[1], raw[2]]
    with pytest.raises(DataError, match="input 0: .*a served model never reads its host's files"):
        clf.predict(None, pd.DataFrame({"image": with_path}))  # a request must not make it read local files
    for column in (raw, [base64.encodebytes(r).decode() for r in raw],  # MLflow's base64 has line breaks
                   [base64.b64encode(r) for r in raw], with_path):
        clf.allow_paths = column is with_path  # in-process only
        out = clf.predict(None, pd.DataFrame({"image": column}))
        assert list(out.columns) == ["a", "b"]
        np.testing.assert_allclose(out.to_numpy(), expected, atol=1e-6)
    with pytest.raises(DataError, match="expected a column 'image'"):
        clf.predict(None, pd.DataFrame({"x": raw}))
    with pytest.raises(DataError, match="input 0"):
        clf.predict(None, pd.DataFrame({"image": [12]}))


class _Tracker:
    def __init__(self) -> None:
        self.status: list[str] = []
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags |= tags

    def finish(self, status: str = "FINISHED") -> None:
        self.status.append(status)


@pytest.mark.parametrize(("exc", "status"), [(ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_interrupted_run_never_stays_running(monkeypatch: pytest.MonkeyPatch, exc: BaseException,
                                                status: str) -> None:
    from primia import runtime
    from tasks.tracking import ends_run

    fake = _Tracker()
    monkeypatch.setattr(runtime, "tracker", lambda run_id=None: fake)
    with pytest.raises(type(exc)), ends_run("r1"):
        raise exc
    assert fake.status == [status] and type(exc).__name__ in fake.tags["primia.error"]


def test_rounds_table_csv() -> None:
    from tasks.tracking import rounds_csv

    text = rounds_csv([{"round": 2.0, "test_mcc": 0.5}, {"round": 1.0, "test_mcc": 0.25, "epsilon": 1.5}])
    assert text.splitlines() == ["round,epsilon,test_mcc", "1,1.5,0.25", "2,,0.5"]
