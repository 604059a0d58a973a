"""The released model as an MLflow pyfunc: raw image files in, class probabilities out.

It carries its own preprocessing, the same the federation trained and evaluated with: decode
(PNG, JPEG or DICOM, by the bytes' signature), resize to the federation's image size, scale to
[0, 1]; the federated input normalisation is two buffers inside the weights, applied by the model.
So `mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw)` equals the coordinator's
evaluation of the checkpoint it came from.

Input: a DataFrame with an `image` column (or `{"image": [...]}`) of raw file bytes, base64 text
of them (what JSON carries), or paths to image files; called directly (not through MLflow's
schema check) a list or one value works too. Output: a DataFrame, one column of
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


def _raw(value: Any, i: int) -> np.ndarray:
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
        path = Path(value)
        if len(value) < 4096 and path.suffix and path.is_file():
            return decode_image(path)
        try:
            return decode_bytes(base64.b64decode(value), what)  # MLflow's base64 has line breaks
        except binascii.Error:
            raise DataError(f"{what}: neither an image file path nor base64 of an image file") from None
    raise DataError(f"{what}: expected image file bytes, base64 text or a path, got {type(value).__name__}")


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
    """The federation's selected global model with its preprocessing."""

    def load_context(self, context: Any) -> None:
        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.load(spec, Path(context.artifacts[WEIGHTS_ARTIFACT]).read_bytes())

    def load(self, spec: dict[str, Any], weights: bytes) -> None:
        self.image_size = int(spec["image_size"])
        self.class_names = [str(c) for c in spec["class_names"]]
        self.model = build_model(ModelConfig(**spec["model"]))
        self.model.load_state_dict(numpy_to_state(decode(weights, "released weights")))
        self.model.eval()

    def preprocess(self, model_input: Any) -> np.ndarray:
        items = inputs_of(model_input)
        if not items:
            return np.zeros((0, 1, self.image_size, self.image_size), dtype=np.float32)
        return np.stack([preprocess(_raw(v, i), self.image_size) for i, v in enumerate(items)])

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
