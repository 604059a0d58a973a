"""Configuration: runtime settings (environment, secrets) and the federation config file (YAML).

`Settings` says *where* things run (object store, Prefect, MLflow) and carries the secrets;
`FederationConfig` says *what* to train. Both fail at load with a message naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from primia.errors import ConfigError

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
MODEL_NAMES = ("small_cnn", "resnet18", "densenet121")
DATA_FORMATS = ("folder", "kermany", "npz", "dicom", "nifti")


# --------------------------------------------------------------------------- runtime settings
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """A data set on disk. `split` picks train/val/test inside an npz file or a Kermany folder."""

    path: Path
    format: Literal["folder", "kermany", "npz", "dicom", "nifti"] = "folder"
    split: Literal["train", "val", "test"] | None = None


class S3Settings(BaseModel):
    endpoint: str = "127.0.0.1:9000"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = False
    region: str = "us-east-1"
    bucket: str = Field(default="primia-checkpoints", pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$")


class CryptoSettings(BaseModel):
    """Checkpoint keys; see primia/store/keys.py for the formats. Secrets only as SecretStr."""

    key_file: Path | None = None
    master_key: SecretStr | None = None
    previous_keys: SecretStr | None = None
    signing_key: SecretStr | None = None


class StoreSettings(BaseModel):
    """Object-store behaviour: retry budget and request timeouts (seconds)."""

    retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    # how often a secure-aggregation wait re-reads the store when no post woke it (in this process, or
    # announced by another through a Prefect event in distributed mode)
    message_poll_s: float = Field(default=0.1, gt=0, le=60)


class PrefectSettings(BaseModel):
    api_url: str | None = None
    ui_url: str | None = None
    auth_string: SecretStr | None = None  # "user:password" of the server's basic auth (PREFECT_API_AUTH_STRING)


class AgentSettings(BaseModel):
    """A hospital agent's own settings (PRIMIA_HOSPITAL__NAME, PRIMIA_HOSPITAL__DATA__PATH, ...).

    They stay at the hospital: the coordinator never receives the data path or the keys."""

    name: str | None = Field(default=None, pattern=SLUG)
    data: DataSource | None = None
    keys_dir: Path | None = None  # default: <home>/hospitals/<name>
    passphrase: SecretStr | None = None  # for an encrypted identity file
    launch_socket: Path | None = None  # set by `primia agent start` for the warm launcher
    # The hospital's own privacy floor, whatever the coordinator asks: no update (or image statistics)
    # leaves in the clear, and no aggregation with a threshold below this fraction of a neighbourhood.
    require_secure_aggregation: bool = True
    min_threshold_fraction: float = Field(default=0.5, ge=0.5, lt=1)
    # Floors on the plans it takes part in: at least this many parties (a 2-party "sum" with a sybil
    # is one hospital's update), and the number of other hospitals it assumes may collude with a
    # malicious coordinator (sums need more than colluders + 1 parties; confirmations a quorum that
    # two views cannot share).
    min_parties: int = Field(default=3, ge=2, le=10_000)
    colluders: int = Field(default=0, ge=0, le=10_000)
    # A retried attempt trains afresh (fresh randomness), so two attempts never send the same update.
    fresh_randomness: bool = True
    authority_key: str | None = None  # the federation authority's public key to pin at enrolment
    # The hospital's own privacy budget for its records (stricter than the federation's if set): past it,
    # it declines to train. require_dp: it refuses any round whose plan has privacy.mode off.
    target_epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1)
    require_dp: bool = True  # a plan with privacy.mode off is refused (PRIMIA_HOSPITAL__REQUIRE_DP=false allows)
    # The privacy audit's membership attack on its own train vs held-out samples: only the figures (AUC, TPR at
    # 1% and 0.1% FPR, the sample count) leave, signed, in the clear (a worst case over hospitals cannot be
    # taken under secure aggregation). false: such a dispatch is refused; the round's audit then FAILs where the
    # audit policy requires membership (membership.required, the default).
    membership_audit: bool = True


class FederationSettings(BaseModel):
    """The coordinator's side of the trust root: the federation authority's public key it pins (as every
    hospital does) and where the authority's key and roster drafts live on the authority's machine."""

    authority_key: str | None = None
    authority_dir: Path | None = None  # default <home>/authority (local development: authority = operator)


class MlflowSettings(BaseModel):
    tracking_uri: str | None = None
    experiment: str = "primia"  # prefix: each federation has its own experiment, "primia/<federation id>"
    username: SecretStr | None = None  # the server's basic-auth login (hospitals need none)
    password: SecretStr | None = None


class PromotionSettings(BaseModel):
    """After a training run: `subflow` runs promote-model in the training flow, `trigger` leaves it to
    the deployment's event trigger (the `primia.training.completed` event), `off` only registers the
    challenger. `auto`: subflow in embedded mode, trigger in distributed mode."""

    after_training: Literal["auto", "subflow", "trigger", "off"] = "auto"
    policy: Path | None = None  # default mlflow/promotion.yaml of the repository


class AuditSettings(BaseModel):
    """After each round: `subflow` runs privacy-audit in the training flow, `trigger` leaves it to the
    deployment's event trigger (the `primia.round.completed` event), `off` runs none. `auto`: subflow
    in embedded mode, trigger in distributed mode."""

    after_round: Literal["auto", "subflow", "trigger", "off"] = "auto"
    policy: Path | None = None  # default mlflow/audit-policy.yaml of the repository


class _LocalStackSource(PydanticBaseSettingsSource):
    """Fills endpoints and credentials from a running local stack (`primia stack up`).

    It ranks below the environment, so `PRIMIA_S3__ENDPOINT=...` still points elsewhere.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        home = Path(os.environ.get("PRIMIA_HOME", ".primia"))
        state_file, cred_file = home / "stack" / "state.json", home / "stack" / "credentials.json"
        if not state_file.exists():
            return {}
        state = json.loads(state_file.read_text())
        out: dict[str, Any] = {
            "s3": {"endpoint": f"127.0.0.1:{state['ports']['s3']}"},
            "prefect": {"api_url": state["urls"]["prefect_api"], "ui_url": state["urls"]["prefect_ui"]},
            "mlflow": {"tracking_uri": state["urls"]["mlflow"]},
        }
        if cred_file.exists():
            creds = json.loads(cred_file.read_text())
            out["prefect"]["auth_string"] = creds.get("prefect_auth")  # one login for every Prefect client
            if not os.environ.get("PRIMIA_HOSPITAL__NAME"):  # the coordinator's own S3 identity and MLflow login;
                out["s3"].update(access_key=creds["access_key"], secret_key=creds["secret_key"])  # an agent has its own
                out["mlflow"].update(username=creds.get("mlflow_username"), password=creds.get("mlflow_password"))
        return out


class Settings(BaseSettings):
    """Where primia's services are; env prefix PRIMIA_, nested with `__` (PRIMIA_S3__ENDPOINT)."""

    model_config = SettingsConfigDict(env_prefix="PRIMIA_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".primia")
    mode: Literal["embedded", "distributed"] = "embedded"
    s3: S3Settings = S3Settings()
    crypto: CryptoSettings = CryptoSettings()
    store: StoreSettings = StoreSettings()
    prefect: PrefectSettings = PrefectSettings()
    mlflow: MlflowSettings = MlflowSettings()
    hospital: AgentSettings = AgentSettings()
    federation: FederationSettings = FederationSettings()
    promotion: PromotionSettings = PromotionSettings()
    audit: AuditSettings = AuditSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, file_secret_settings, _LocalStackSource(settings_cls)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"settings: {_first_error(exc, prefix='PRIMIA_')}") from None


# --------------------------------------------------------------------------- federation config
class ModelConfig(_Strict):
    name: Literal["small_cnn", "resnet18", "densenet121"] = "small_cnn"
    num_classes: int = Field(default=2, ge=2, le=1000)
    in_channels: int = Field(default=1, ge=1, le=4)


class AugmentConfig(_Strict):
    enabled: bool = True
    flip_prob: float = Field(default=0.5, ge=0, le=1)
    affine_prob: float = Field(default=0.5, ge=0, le=1)
    rotate_deg: float = Field(default=10.0, ge=0, le=180)
    scale: float = Field(default=0.1, ge=0, le=0.5)
    noise_std: float = Field(default=0.02, ge=0, le=1)
    contrast_gamma: tuple[float, float] = (0.8, 1.25)


class DataConfig(_Strict):
    """normalize: 'federated' standardises inputs with the pooled pixel mean and std of all hospitals'
    training images, computed before round 1 through secure aggregation (no hospital reveals its
    own); 'none' feeds images as preprocessed (scaled to [0, 1])."""

    image_size: int = Field(default=64, ge=8, le=512)
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    augment: AugmentConfig = AugmentConfig()
    normalize: Literal["federated", "none"] = "federated"


class TrainingConfig(_Strict):
    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=1e-3, gt=0, le=10)
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    class_weighting: bool = False


class StrategyConfig(_Strict):
    """Server aggregation: fedavg, fedprox (proximal_mu at the hospitals), fedadam / fedyogi (server
    optimizer: server_lr, beta1, beta2, tau), median or trimmed_mean (trim_fraction per side)."""

    name: Literal["fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean"] = "fedavg"
    proximal_mu: float = Field(default=0.01, gt=0, le=100)
    server_lr: float = Field(default=0.01, gt=0, le=10)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, lt=1)
    trim_fraction: float = Field(default=0.1, ge=0, lt=0.5)


class CheckpointConfig(_Strict):
    """Retention: keep the last `keep_last` committed rounds (0: all) plus the selected round and
    every pinned (registered) round."""

    keep_last: int = Field(default=5, ge=0, le=100_000)


class AuditConfig(_Strict):
    """The per-round privacy audit (primia.audit): its time budget, how hard the inversion tries, and
    the one-run DP check's canaries (0: none). What the budget cuts is recorded with the verdict."""

    time_budget_s: float = Field(default=60.0, gt=0, le=3600)
    attack_images: int = Field(default=4, ge=1, le=64)  # reconstructed per attacked update
    steps: int = Field(default=3000, ge=1, le=100_000)  # per restart; the smooth attack needs ~3000 at 64x64
    restarts: int = Field(default=2, ge=1, le=100)
    membership: bool = True  # the hospitals' membership-inference audit (embedded mode: run in place)
    canaries: int = Field(default=0, ge=0, le=10_000)

    @field_validator("canaries")
    @classmethod
    def _canaries_to_guess(cls, v: int) -> int:
        if v == 1:
            raise ValueError("audit.canaries must be 0 (no one-run DP check) or at least 2 (one canary gives "
                             "nothing to rank)")
        return v


class RoundPolicy(_Strict):
    """Who takes part in a round and how long the coordinator waits.

    Each round samples `ceil(sample_fraction * hospitals)` (at least `min_hospitals`) of the active
    hospitals; a hospital that has not answered within `round_timeout_s` is dropped from the round;
    a round with fewer than `min_hospitals` accepted updates is tried again up to `round_retries`
    times (`retry_wait_s` apart), then the federation stops with a message saying who was missing.
    Distributed mode: an agent whose heartbeat is older than `liveness_s` counts as gone at whatever
    stage it is (the others finish without it) and is not asked again until it beats again."""

    sample_fraction: float = Field(default=1.0, gt=0, le=1)
    min_hospitals: int = Field(default=1, ge=1, le=10_000)
    liveness_s: float = Field(default=30.0, ge=2, le=3600)  # silent longer (no heartbeat): dropped at any stage
    round_timeout_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    round_retries: int = Field(default=1, ge=0, le=100)
    retry_wait_s: float = Field(default=5.0, ge=0, le=3600)


class HospitalConfig(_Strict):
    """A hospital of the federation. `data` only in embedded mode (a simulation on one machine); in
    distributed mode the data path lives in the hospital agent's own settings."""

    name: str = Field(pattern=SLUG)
    data: DataSource | None = None
    # The hospital's own, stricter privacy budget for its records (an agent: PRIMIA_HOSPITAL__TARGET_EPSILON).
    target_epsilon: float | None = Field(default=None, gt=0, le=100)
    delta: float | None = Field(default=None, gt=0, lt=1)


class SecureAggregationConfig(_Strict):
    """SecAgg+ (on by default): the coordinator learns only the sample-weighted sum of the updates.

    Each coordinate of an update (local minus global weights) is clipped to [-clip, clip], multiplied
    by the hospital's sample count and encoded in fixed point in Z_2^bits. The ring must hold the sum:
    max_hospitals * max_examples * clip * 2^frac_bits < 2^(bits-1); frac_bits is derived from that and a
    hospital with more than max_examples training samples refuses to take part (fails closed).
    neighbours: 0 picks the SecAgg+ graph degree automatically (complete graph up to 9 hospitals).
    threshold_fraction: shares needed to unmask, as a fraction of a neighbourhood (t = floor(f*(k+1))+1)."""

    enabled: bool = True
    bits: Literal[32, 64] = 32
    clip: float = Field(default=1.0, gt=0, le=1e6)
    max_examples: int = Field(default=10_000, ge=1, le=10**9)
    max_hospitals: int = Field(default=16, ge=2, le=10_000)
    neighbours: int = Field(default=0, ge=0)
    threshold_fraction: float = Field(default=0.5, gt=0, lt=1)
    stage_timeout_s: float = Field(default=120.0, gt=0, le=86_400)

    @field_validator("neighbours")
    @classmethod
    def _even_degree(cls, v: int) -> int:
        if v and (v < 2 or v % 2):
            raise ValueError(f"must be 0 (automatic) or an even number >= 2 (a ring graph), got {v}")
        return v

    @model_validator(mode="after")
    def _fits_the_ring(self) -> SecureAggregationConfig:
        if self.enabled:
            self.frac_bits  # noqa: B018  # raises with the bound when the ring is too small
        return self

    @property
    def frac_bits(self) -> int:
        from primia.secure.fixedpoint import frac_bits_for

        return frac_bits_for(self.bits, self.max_hospitals, self.max_examples, self.clip)

    @property
    def quantization_bound(self) -> float:
        """Largest error per coordinate of the securely aggregated mean (unclipped updates)."""
        return 2.0 ** -(self.frac_bits + 1)


class PrivacyConfig(_Strict):
    """Differential privacy (sample-level DP-SGD by default; client-level DP-FedAvg; or off, said so).

    sample: every hospital trains with DP-SGD (Opacus, Poisson sampling, per-sample clipping to
    `max_grad_norm`) under one accountant for the whole federation; (target_epsilon, delta) is each
    hospital's budget for its own records (delta must be below 1/N there). `noise_multiplier` None:
    planned at the first round so that `rounds` rounds fit the budget.
    client: each hospital clips its update to L2 norm `clip_norm` and adds its share of Skellam noise
    under secure aggregation; (target_epsilon, delta) is the federation's budget per hospital.
    A round that would pass the budget is not run; nothing turns DP off but `mode: off`."""

    mode: Literal["sample", "client", "off"] = "sample"
    target_epsilon: float = Field(default=8.0, gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(default=None, gt=0, le=100)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1e4)
    clip_norm: float = Field(default=1.0, gt=0, le=1e4)
    accountant: Literal["prv", "rdp"] = "prv"
    grad_sample_mode: Literal["auto", "hooks", "functorch", "ew", "ghost"] = "auto"
    planned_rounds: int | None = Field(default=None, ge=1, le=10_000)  # default: the federation's rounds

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class LocalSpec(_Strict):
    """What a hospital needs to train a round: everything but who takes part and where data lives.
    This, not the federation config, is what the coordinator sends to a hospital agent."""

    federation_id: str = Field(pattern=SLUG)
    seed: int = Field(default=42, ge=0)
    class_names: tuple[str, ...] | None = None
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    strategy: StrategyConfig = StrategyConfig()
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    rounds: int = Field(default=5, ge=1, le=10_000)

    @model_validator(mode="after")
    def _private_training(self) -> LocalSpec:
        p = self.privacy
        if p.mode == "client" and not self.secure_aggregation.enabled:
            raise ValueError("privacy.mode client adds each hospital's share of the noise: without secure "
                             "aggregation the coordinator would see every update with a fraction of it "
                             "(enable secure_aggregation, or use privacy.mode sample)")
        if p.mode == "sample" and self.strategy.name == "fedprox":
            raise ValueError("privacy.mode sample: FedProx's proximal term is not clipped per sample, so DP-SGD "
                             "would not cover it; use fedavg, fedadam or fedyogi")
        if p.mode == "sample" and self.training.class_weighting:
            raise ValueError("privacy.mode sample: class weighting derives the loss from the hospital's label "
                             "counts, which DP-SGD does not cover; set training.class_weighting false")
        return self

    @model_validator(mode="after")
    def _secure_strategy(self) -> LocalSpec:
        if self.secure_aggregation.enabled and self.strategy.name in ("median", "trimmed_mean"):
            raise ValueError(
                f"strategy {self.strategy.name} needs every hospital's update in the clear, which secure "
                f"aggregation exists to prevent: use fedavg, fedprox, fedadam or fedyogi, or set "
                f"secure_aggregation.enabled: false to trade update privacy for robustness")
        return self

    @model_validator(mode="after")
    def _classes_match(self) -> LocalSpec:
        if self.class_names is not None and len(self.class_names) != self.model.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but model.num_classes is "
                f"{self.model.num_classes}"
            )
        return self

    def local_spec(self) -> LocalSpec:
        return LocalSpec.model_validate(self.model_dump(include=set(LocalSpec.model_fields)))


class FederationConfig(LocalSpec):
    """One federation: who takes part, on what data, training what, for how many rounds.

    `hospitals` may be left out in distributed mode: then every active hospital of the signed roster
    takes part."""

    checkpoints: CheckpointConfig = CheckpointConfig()
    policy: RoundPolicy = RoundPolicy()
    audit: AuditConfig = AuditConfig()
    hospitals: tuple[HospitalConfig, ...] = ()
    test_data: DataSource

    @field_validator("hospitals")
    @classmethod
    def _unique_names(cls, v: tuple[HospitalConfig, ...]) -> tuple[HospitalConfig, ...]:
        names = [h.name for h in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"hospital names must be unique, repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _ring_holds_the_hospitals(self) -> FederationConfig:
        sa = self.secure_aggregation
        if sa.enabled and len(self.hospitals) > sa.max_hospitals:
            raise ValueError(f"secure_aggregation.max_hospitals is {sa.max_hospitals} but {len(self.hospitals)} "
                             f"hospitals are listed: raise it (the ring bound is checked against it)")
        return self


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"field {prefix}{loc}: {err['msg']}{shown}"


def parse_federation_config(raw: dict[str, Any], source: str = "config") -> FederationConfig:
    try:
        return FederationConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def load_federation_config(path: str | Path) -> FederationConfig:
    """Read a YAML federation config; relative data paths are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    _resolve_paths(raw, path.parent.resolve())
    return parse_federation_config(raw, source=f"config file {path}")


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    sources = [raw.get("test_data")] + [h.get("data") for h in raw.get("hospitals") or [] if isinstance(h, dict)]
    for src in sources:
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            p = Path(expand_path(src["path"]))
            src["path"] = str(p if p.is_absolute() else base / p)


def expand_path(raw: str) -> str:
    """`${PRIMIA_HOME}` (default .primia, from the working folder), other $VARS and ~ in a data path."""
    home = str(Path(os.environ.get("PRIMIA_HOME", ".primia")).resolve())
    return os.path.expanduser(os.path.expandvars(raw.replace("${PRIMIA_HOME}", home)))


def config_to_params(cfg: FederationConfig) -> dict[str, str]:
    """Flatten the config for MLflow params. Paths are left out: they are hospital-local."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not isinstance(value, SecretStr):
            flat[prefix] = str(value)

    data = cfg.model_dump(mode="json", exclude={"hospitals", "test_data"})
    walk("", data)
    flat["hospitals"] = ",".join(h.name for h in cfg.hospitals)
    flat["num_hospitals"] = str(len(cfg.hospitals))
    return flat
