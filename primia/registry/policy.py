"""The promotion policy (mlflow/promotion.yaml): what a version must show to become `champion`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from primia.errors import ConfigError

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "mlflow" / "promotion.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityGate(_Strict):
    metric: str = "mcc"  # on the coordinator's held-out test set, evaluated afresh at promotion
    tolerance: float = Field(default=0.02, ge=0, le=1)  # challenger >= champion - tolerance
    floor: float = Field(default=0.3, ge=-1, le=1)  # and never below this


class PrivacyGate(_Strict):
    max_epsilon: float = Field(default=8.0, gt=0)  # the largest per-hospital epsilon the version spent
    max_delta: float = Field(default=1e-5, gt=0, lt=1)
    require_dp: bool = True  # a version trained without differential privacy never becomes champion


class AuditGate(_Strict):
    required: bool = True  # the latest audit of the version must be PASS; no audit fails the gate


class PromotionPolicy(_Strict):
    quality: QualityGate = QualityGate()
    privacy: PrivacyGate = PrivacyGate()
    audit: AuditGate = AuditGate()


def load_policy(path: str | Path | None = None) -> PromotionPolicy:
    return load_yaml_model(Path(path) if path else DEFAULT_POLICY, PromotionPolicy, "promotion policy")


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M], what: str) -> M:
    """A policy file parsed into `model`; a missing file, bad YAML or a bad field is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return model.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}".splitlines()[0]) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{what} {path}: {where}: {first['msg']}") from None
