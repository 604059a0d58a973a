"""Release the selected global model to MLflow: a pyfunc with signature and input example, registered
as a new version of the federation's registered model with alias `challenger`, with its privacy
model card as description and tags.

The registry's weights are plaintext on purpose: they are the release artifact that `mlflow models
serve` and any consumer load. Differential privacy is what protects the hospitals in a released
model (the guarantee covers any use of the weights), so encrypting this copy would protect nothing
DP does not, while handing the checkpoint key to every serving host. The encrypted checkpoints stay
the federation's record; each version names the one it came from, and the weights' digest is
checked against it before promotion.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from PIL import Image

import mlflow
from primia.messages import CheckpointRef
from primia.registry import card
from primia.registry.pyfunc import INPUT_COLUMN, SPEC_ARTIFACT, WEIGHTS_ARTIFACT, ImageClassifier
from primia.store.weights import Weights, digest, encode

CHALLENGER, CHAMPION = "challenger", "champion"
MODEL_CODE = Path(__file__).resolve().parent / "model_code.py"  # models from code: no pickle in the model
MODEL_PATH = "model"
# What a serving environment needs besides primia itself (installed there: `--env-manager local`).
SERVING_PACKAGES = ("torch", "monai", "opacus", "pydicom", "pillow", "safetensors", "pandas", "numpy", "pydantic",
                    "scipy", "scikit-learn", "pyyaml", "mlflow")


@dataclass(frozen=True)
class Release:
    """Everything the registry records of one selected model."""

    name: str  # the registered model: one per federation
    federation_id: str
    run_id: str
    round: int
    rounds: int
    checkpoint: CheckpointRef
    weights: Weights
    spec: dict[str, Any]  # model config, image size, class names (what the pyfunc needs to rebuild it)
    example_images: np.ndarray  # two or more preprocessed test images, for the input example
    privacy: dict[str, Any] | None  # the signed manifest's privacy statement of the selected round
    ci: dict[str, tuple[float, float, float]]
    test_size: int
    secure: str  # markdown: secure aggregation's settings and who was in each sum
    data: str  # markdown: the hospitals' data fingerprints as reported
    code: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    audit: dict[str, str] = field(default_factory=dict)  # the selected round's audit verdict tags, if it ran


def png_bytes(image: np.ndarray) -> bytes:
    """A preprocessed (1, S, S) image in [0, 1] as an 8-bit PNG file."""
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image[0] * 255), 0, 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def input_example(images: np.ndarray) -> pd.DataFrame:
    if len(images) < 2:
        raise ValueError(f"the input example needs at least two images, got {len(images)}")
    return pd.DataFrame({INPUT_COLUMN: [png_bytes(x) for x in images]})


def _requirements() -> list[str]:
    return [f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in SERVING_PACKAGES]


def log_model(client: MlflowClient, release: Release) -> Any:
    """The pyfunc as a logged model of the training run; returns MLflow's ModelInfo."""
    model = ImageClassifier()
    model.load(release.spec, encode(release.weights))
    example = input_example(release.example_images)
    signature = infer_signature(example, model.predict(None, example))
    with tempfile.TemporaryDirectory(prefix="primia-release-") as tmp:
        spec_file, weights_file = Path(tmp) / "spec.json", Path(tmp) / "weights.safetensors"
        spec_file.write_text(json.dumps(release.spec, indent=2))
        weights_file.write_bytes(encode(release.weights))
        # Not the fluent API: it would log into the default experiment, or close the training run.
        experiment = client.get_run(release.run_id).info.experiment_id
        logged = client.create_logged_model(experiment, name=MODEL_PATH, source_run_id=release.run_id,
                                            tags={"primia.federation_id": release.federation_id,
                                                  "primia.round": str(release.round)})
        info = Model.log(artifact_path=None, name=MODEL_PATH, flavor=mlflow.pyfunc, run_id=release.run_id,
                         model_id=logged.model_id, python_model=str(MODEL_CODE),
                         artifacts={SPEC_ARTIFACT: str(spec_file), WEIGHTS_ARTIFACT: str(weights_file)},
                         signature=signature, input_example=example, pip_requirements=_requirements())
    return info


def version_tags(release: Release) -> dict[str, str]:
    p = release.privacy or {}
    tags = {
        "primia.federation_id": release.federation_id, "primia.round": str(release.round),
        "primia.checkpoint.bucket": release.checkpoint.bucket, "primia.checkpoint.key": release.checkpoint.key,
        "primia.checkpoint.digest": release.checkpoint.digest, "primia.weights.digest": digest(release.weights),
        "primia.privacy.mode": str(p.get("mode", "unknown")),
        "primia.audit.verdict": card.NOT_AUDITED,
        **release.audit,
        **{k: v for k, v in release.code.items() if k.startswith("primia.") or k.endswith("git.commit")},
    }
    for k in ("epsilon", "delta", "target_epsilon", "accountant", "max_grad_norm", "clip_norm"):
        if p.get(k) is not None:
            tags[f"primia.privacy.{k}"] = str(p[k])
    for metric, (est, lo, hi) in release.ci.items():
        tags[f"primia.test.{metric}"] = f"{est:.4f} [{lo:.4f}, {hi:.4f}]"
    return tags


def card_fields(release: Release, version: str, status: str, audit: str, gates: str) -> dict[str, Any]:
    s = release.spec
    return {"name": release.name, "version": version, "status": status, "federation": release.federation_id,
            "model": s["model"]["name"], "image_size": s["image_size"], "classes": ", ".join(s["class_names"]),
            "round": release.round, "rounds": release.rounds, "bucket": release.checkpoint.bucket,
            "key": release.checkpoint.key, "checkpoint_digest": release.checkpoint.digest,
            "weights_digest": digest(release.weights), "primia_version": release.code.get("primia.version", ""),
            "git_commit": release.code.get("mlflow.source.git.commit", "unknown"),
            "git_dirty": " (work tree dirty)" if release.code.get("primia.git.dirty") == "true" else "",
            "run_id": release.run_id, "privacy": card.privacy_section(release.privacy), "secure": release.secure,
            "data": release.data, "metrics": card.metrics_section(release.ci, release.test_size), "audit": audit,
            "gates": gates}


def _audit_section(tags: dict[str, str]) -> str:
    if not tags:
        return card.audit_section(None)
    return card.audit_section(tags["primia.audit.verdict"], {"round": tags.get("primia.audit.round", ""),
                                                             "summary": tags.get("primia.audit.summary", "")})


def register(client: MlflowClient, release: Release) -> str:
    """Log, register and alias `challenger`; the model card is the version's description and a run
    artifact. Returns the new version number."""
    t0 = time.perf_counter()
    info = log_model(client, release)
    t1 = time.perf_counter()
    try:
        client.create_registered_model(release.name, tags={"primia.federation_id": release.federation_id},
                                       description=f"Federation `{release.federation_id}`: its selected global "
                                                   "models. `champion` passed every promotion gate.")
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(release.name, source=info.model_uri, run_id=release.run_id,
                                     tags=version_tags(release), model_id=info.model_id)
    markdown = card.render(card_fields(release, mv.version, "Registered as `challenger`; not yet promoted.",
                                       _audit_section(release.audit), card.gates_section(None)))
    client.update_model_version(release.name, mv.version, description=markdown)
    client.log_text(release.run_id, markdown, f"model_card/v{mv.version}.md")
    client.set_registered_model_alias(release.name, CHALLENGER, mv.version)
    release.timings.update(log_model_s=t1 - t0, register_s=time.perf_counter() - t1)
    return str(mv.version)
