"""The released model as an MLflow pyfunc: raw image files in, class probabilities out.

It carries its own preprocessing, the same the federation trained and evaluated with: decode
(PNG, JPEG or DICOM, by the bytes' signature), resize to the federation's image size, scale to
[0, 1]; the federated input normalisation is two buffers inside the weights, applied by the model.
So `mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw)` equals the coordinator's
evaluation of the checkpoint it came from.

Input: a DataFrame with an `image` column (or `{"image": [...]}`) of raw file bytes or base64 text
of them (what JSON carries); paths to image files only where `allow_paths` is set in-process (a
served model never reads its host's files). Called directly (not through MLflow's schema check) a
list or one value works too. Output: a DataFrame, one column of
probabilities per class name.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from primia.config import ModelConfig
from primia.data.decode import decode_bytes, decode_image, sniff
from primia.data.transforms import preprocess
from primia.errors import DataError
from primia.models.factory import build_model
from primia.store.weights import decode, numpy_to_state

INPUT_COLUMN = "image"
SPEC_ARTIFACT, WEIGHTS_ARTIFACT = "spec", "weights"


PATHS_REFUSED = ("file paths are read only by a model loaded in-process with allow_paths=True (a served model "
                 "never reads its host's files): send the file's bytes or base64")


def _raw(value: Any, i: int, allow_paths: bool = False) -> np.ndarray:
    """One input -> the decoded 2-D image."""
    what = f"input {i}"
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if not sniff(data):  # base64 text as bytes (JSON's "inputs" format is not decoded by MLflow)
            try:
                data = base64.b64decode(data)
            except binascii.Error:
                pass
        return decode_bytes(data, what)
    if isinstance(value, str):
        looks_like_path = len(value) < 4096 and "\n" not in value and bool(Path(value).suffix)
        if allow_paths and looks_like_path and Path(value).is_file():
            return decode_image(Path(value))
        try:
            data = base64.b64decode(value)  # MLflow's base64 has line breaks
        except binascii.Error:
            data = b""
        if not sniff(data):
            raise DataError(f"{what}: not base64 of a PNG, JPEG or DICOM file"
                            + (f"; {PATHS_REFUSED}" if looks_like_path else ""))
        return decode_bytes(data, what)
    raise DataError(f"{what}: expected image file bytes or base64 text, got {type(value).__name__}")


def inputs_of(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN not in model_input.columns:
            raise DataError(f"model input: expected a column {INPUT_COLUMN!r}, got {list(model_input.columns)}")
        return list(model_input[INPUT_COLUMN])
    if isinstance(model_input, dict):
        return list(np.atleast_1d(np.asarray(model_input[INPUT_COLUMN], dtype=object)))
    if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
        return list(model_input)
    return [model_input]


class ImageClassifier(PythonModel):  # type: ignore[misc]  # MLflow's class is untyped
    """The federation's selected global model with its preprocessing. `allow_paths`: read inputs that
    name local files (off: whoever can send a request to a served model must not make it read its host's
    files; in-process, `load_model(...).unwrap_python_model().allow_paths = True`)."""

    allow_paths = False

    def load_context(self, context: Any) -> None:
        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.load(spec, Path(context.artifacts[WEIGHTS_ARTIFACT]).read_bytes())

    def load(self, spec: dict[str, Any], weights: bytes) -> None:
        self.spec = spec
        self.image_size = int(spec["image_size"])
        self.class_names = [str(c) for c in spec["class_names"]]
        self.model = build_model(ModelConfig(**spec["model"]))
        self.model.load_state_dict(numpy_to_state(decode(weights, "released weights")))
        self.model.eval()

    def preprocess(self, model_input: Any) -> np.ndarray:
        items = inputs_of(model_input)
        if not items:
            return np.zeros((0, 1, self.image_size, self.image_size), dtype=np.float32)
        return np.stack([preprocess(_raw(v, i, self.allow_paths), self.image_size) for i, v in enumerate(items)])

    def predict_arrays(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities for preprocessed (N, 1, S, S) arrays: the coordinator's evaluation path."""
        with torch.no_grad():
            out = [torch.softmax(self.model(torch.as_tensor(images[i:i + batch_size])), dim=1)
                   for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), dtype=np.float32)

    # model_input is typed DataFrame, a hint MLflow infers no signature from (ours is explicit); the
    # method still takes what inputs_of() does when called directly
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.predict_arrays(self.preprocess(model_input)), columns=self.class_names)
