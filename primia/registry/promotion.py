"""Promotion to `champion` behind the quality, privacy and audit gates, and the champion's re-check.

Nothing is taken on the registry's word: the challenger and the champion are loaded from the
registry (the copies that would be served) and scored afresh on the coordinator's held-out set;
the privacy record is read from the coordinator-signed manifest of the version's checkpoint, and
the registry's weights must have the digest of that checkpoint's decrypted weights.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from primia.config import FederationConfig, parse_federation_config
from primia.data.imageset import ImageSet
from primia.errors import IntegrityError, PrimiaError, StoreError
from primia.registry import card, gates
from primia.registry.policy import PromotionPolicy
from primia.registry.pyfunc import ImageClassifier
from primia.registry.release import CHALLENGER, CHAMPION
from primia.store import digest as dg
from primia.store.checkpoints import CheckpointStore
from primia.store.weights import digest, state_to_numpy
from primia.training.metrics import classification_metrics

GATES_HEADING = "## Promotion gates"
AUDIT_TAG = "primia.audit.verdict"


@dataclass
class Decision:
    name: str
    version: str
    action: str  # promoted | not promoted | kept | demoted | no champion
    gates: list[gates.Gate] = field(default_factory=list)
    champion_before: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def reasons(self) -> str:
        return "; ".join(f"{g.name}: {g.reason}" for g in self.gates if not g.passed)

    def markdown(self) -> str:
        head = f"# {self.name} v{self.version}: {self.action}"
        return "\n\n".join([head, card.gates_section(self.gates),
                            f"Champion before: {'v' + self.champion_before if self.champion_before else 'none'}."])


CONFIG_ARTIFACT = "config.yaml"


def config_of(client: MlflowClient, version: ModelVersion) -> FederationConfig:
    """The federation config the version was trained with (its run's config artifact): where the
    coordinator's held-out test set is."""
    if not version.run_id:
        raise PrimiaError(f"model {version.name} v{version.version} names no training run")
    return config_of_run(client, version.run_id, f"model {version.name} v{version.version}")


def config_of_run(client: MlflowClient, run_id: str, what: str = "") -> FederationConfig:
    """The federation config a training run logged as its config artifact."""
    with tempfile.TemporaryDirectory(prefix="primia-config-") as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except MlflowException as exc:
            raise PrimiaError(f"{what or f'run {run_id}'}: its run has no {CONFIG_ARTIFACT} ({exc.message})") from None
        return parse_federation_config(yaml.safe_load(Path(path).read_text()),
                                       source=f"{CONFIG_ARTIFACT} of run {run_id}")


def model_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """The registered version, or a clear error naming what is missing (not MLflow's traceback)."""
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            known = [str(v.version) for v in client.search_model_versions(f"name='{name}'")] if name else []
            raise PrimiaError(f"registered model {name!r} has no version {version!r} "
                              f"(versions: {', '.join(sorted(known, key=int)) or 'none'})") from None
        raise


def load_version(version: ModelVersion) -> ImageClassifier:
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    impl = model.unwrap_python_model()
    if not isinstance(impl, ImageClassifier):
        raise PrimiaError(f"model {version.name} v{version.version} is not a primia image classifier")
    return impl


def score(model: ImageClassifier, test: ImageSet, metric: str) -> float:
    metrics = classification_metrics(test.labels, model.predict_arrays(test.images), test.class_names)
    if metric not in metrics:
        raise PrimiaError(f"promotion policy: quality metric {metric!r} is not one of {sorted(metrics)}")
    return float(metrics[metric])


def signed_privacy(store: CheckpointStore, version: ModelVersion, model: ImageClassifier) -> dict[str, Any] | None:
    """The privacy statement of the signed manifest that commits the version's checkpoint, or None when
    the version's checkpoint is not that manifest's global model or its weights differ from the
    registry's (the record would then describe another model)."""
    tags = version.tags
    try:
        server_round = int(tags["primia.round"])
        entry = store.load_round(server_round).manifest
    except (KeyError, ValueError, StoreError):
        return None
    obj = entry["objects"].get("global.safetensors") or {}
    try:  # versions registered before digests named their algorithm carry primia.checkpoint.sha256
        named = (tags.get("primia.checkpoint.bucket"), tags.get("primia.checkpoint.key"),
                 dg.from_entry(tags, "primia.checkpoint."))
        if (obj.get("bucket"), obj.get("key"), dg.from_entry(obj)) != named:
            return None
    except IntegrityError:
        return None
    ref = store.load_round(server_round).ref("global.safetensors")
    if digest(store.get_weights(ref)) != digest(state_to_numpy(model.model.state_dict())):
        return None
    return dict(entry.get("privacy") or {"mode": "off"})


def audit_verdict(version: ModelVersion) -> tuple[str | None, str]:
    verdict = version.tags.get(AUDIT_TAG)
    if verdict in (None, "", card.NOT_AUDITED):
        return None, ""
    return verdict, version.tags.get("primia.audit.summary", "")


def champion_of(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise


def _gates(policy: PromotionPolicy, version: ModelVersion, model: ImageClassifier, value: float,
           champion: tuple[float, str] | None, store: CheckpointStore) -> list[gates.Gate]:
    verdict, detail = audit_verdict(version)
    return [gates.quality(policy, value, champion[0] if champion else None, champion[1] if champion else None),
            gates.privacy(policy, signed_privacy(store, version, model)),
            gates.audit(policy, verdict, detail)]


def _record(client: MlflowClient, decision: Decision) -> None:
    """Every gate's verdict, reason and figures on the version, and the card's gates section."""
    tags = {k: v for g in decision.gates for k, v in g.tags().items()}
    tags |= {"primia.promotion.decision": decision.action, "primia.promotion.at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                                  time.gmtime()),
             "primia.promotion.reasons": decision.reasons() or "every gate passed"}
    for k, v in tags.items():
        client.set_model_version_tag(decision.name, decision.version, k, v[:5000])
    mv = client.get_model_version(decision.name, decision.version)
    body = (mv.description or "").split(GATES_HEADING)[0]
    section = f"{GATES_HEADING}\n**{decision.action}** ({tags['primia.promotion.at']}).\n\n" \
              f"{card.gates_section(decision.gates)}\n"
    client.update_model_version(decision.name, decision.version, description=body + section)


def promote(client: MlflowClient, name: str, version: str, policy: PromotionPolicy, test: ImageSet,
            store: CheckpointStore) -> Decision:
    """Gate `version` against the current champion; move `champion` to it only if every gate passes."""
    started = time.perf_counter()
    mv = model_version(client, name, version)
    model = load_version(mv)
    value = score(model, test, policy.quality.metric)
    current = champion_of(client, name)
    champion = None
    if current is not None and current.version != mv.version:
        champion = (score(load_version(current), test, policy.quality.metric), str(current.version))
    decision = Decision(name, str(mv.version), "", _gates(policy, mv, model, value, champion, store),
                        str(current.version) if current else None)
    decision.action = "promoted" if decision.passed else "not promoted"
    if decision.passed:  # the alias first: a worker that dies next leaves a champion the nightly re-check
        client.set_registered_model_alias(name, CHAMPION, mv.version)  # gates again, never a "promoted" tag
        if _alias_version(client, name, CHALLENGER) == str(mv.version):  # on a version that is not
            client.delete_registered_model_alias(name, CHALLENGER)
    _record(client, decision)
    decision.seconds = time.perf_counter() - started
    return decision


def recheck(client: MlflowClient, name: str, policy: PromotionPolicy, test: Callable[[ModelVersion], ImageSet],
            store: CheckpointStore) -> Decision:
    """The champion against today's policy; demoted (the alias removed, the reason tagged) if a gate fails."""
    started = time.perf_counter()
    current = champion_of(client, name)
    if current is None:
        return Decision(name, "", "no champion")
    model = load_version(current)
    value = score(model, test(current), policy.quality.metric)
    decision = Decision(name, str(current.version), "", _gates(policy, current, model, value, None, store),
                        str(current.version))
    decision.action = "kept" if decision.passed else "demoted"
    _record(client, decision)
    if not decision.passed:
        client.delete_registered_model_alias(name, CHAMPION)
        client.set_model_version_tag(name, current.version, "primia.demoted", decision.reasons()[:5000])
    decision.seconds = time.perf_counter() - started
    return decision


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None
