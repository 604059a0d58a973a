"""Weights as bytes: safetensors only (no pickle crosses a trust boundary)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save

from primia.errors import StoreError

Weights = dict[str, np.ndarray]


def state_to_numpy(state: dict[str, torch.Tensor]) -> Weights:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def numpy_to_state(weights: Weights) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}


def encode(weights: Weights, metadata: dict[str, str] | None = None) -> bytes:
    return np_save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=metadata)


def decode(data: bytes, what: str = "weights") -> Weights:
    try:
        return np_load(data)
    except Exception as exc:  # safetensors raises its own error type for malformed headers
        raise StoreError(f"{what} is not a valid safetensors payload: {exc}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(weights: Weights) -> str:
    """A digest of the weights themselves (names, dtypes, shapes, values), whatever their encoding or
    encryption: the same model committed twice has the same digest."""
    h = hashlib.sha256()
    for k in sorted(weights):
        w = np.ascontiguousarray(weights[k])
        h.update(f"{k}|{w.dtype.str}|{w.shape}|".encode())
        h.update(w.tobytes())
    return h.hexdigest()
