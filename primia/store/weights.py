"""Weights as bytes: safetensors only (no pickle crosses a trust boundary).

Writing uses the safetensors library. Reading parses the format here (8-byte little-endian header
length, a JSON header of dtype, shape and data offsets, then the tensors' bytes): the library reads
only `bytes`, and a checkpoint decrypted in place arrives as a read-only view of its download buffer;
making `bytes` of it would copy 45 MB once more. The checks are the library's: known dtypes, offsets
inside the buffer, each tensor's size matching its shape, the tensors tiling the data exactly.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from safetensors.numpy import save as np_save

from primia.errors import StoreError

Weights = dict[str, np.ndarray]


def state_to_numpy(state: dict[str, torch.Tensor]) -> Weights:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def numpy_to_state(weights: Weights) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}


def encode(weights: Weights, metadata: dict[str, str] | None = None) -> bytes:
    return np_save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=metadata)


DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100_000_000  # the library's own limit
MAX_DIMS = 64  # numpy's


def decode(data: bytes | bytearray | memoryview, what: str = "weights") -> Weights:
    """Arrays (writable copies, independent of `data`) from a safetensors payload; StoreError naming
    `what` and the fault when it is malformed."""
    try:
        return _decode(memoryview(data).cast("B"))
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise StoreError(f"{what} is not a valid safetensors payload: {exc}") from None
    except RecursionError:  # a header nested thousands deep
        raise StoreError(f"{what} is not a valid safetensors payload: its header nests too deep") from None


def _decode(view: memoryview) -> Weights:
    if len(view) < 8:
        raise ValueError(f"{len(view)} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(view[:8], "little")
    if n > min(MAX_HEADER, len(view) - 8):
        raise ValueError(f"header length {n} runs past the {len(view)}-byte payload")
    header = json.loads(bytes(view[8:8 + n]))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    body, out, spans = view[8 + n:], {}, []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(meta, dict):
            raise ValueError(f"tensor {name!r}: its entry is not a JSON object")
        dtype = np.dtype(DTYPES[meta["dtype"]]) if meta.get("dtype") in DTYPES else None
        shape, offsets = meta.get("shape"), meta.get("data_offsets")
        if dtype is None:
            raise ValueError(f"tensor {name!r}: unknown dtype {meta.get('dtype')!r}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(type(d) is int and d >= 0 for d in shape)):
            raise ValueError(f"tensor {name!r}: shape is not a list of at most {MAX_DIMS} sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= len(body)):
            raise ValueError(f"tensor {name!r}: data offsets {offsets!r} outside the {len(body)}-byte data")
        begin, end = offsets
        if end - begin != _nbytes(shape, dtype.itemsize, len(body)):
            raise ValueError(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {meta['dtype']}")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise ValueError("the tensors overlap or leave holes in the data")
        covered = end
    if covered != len(body):
        raise ValueError(f"{len(body) - covered} bytes of data belong to no tensor")
    return out


def _nbytes(shape: list[int], itemsize: int, limit: int) -> int:
    """The tensor's size in bytes, or limit + 1 once it passes `limit` (no product of huge numbers)."""
    if 0 in shape:
        return 0
    size = itemsize
    for d in shape:
        size *= d
        if size > limit:
            return limit + 1
    return size


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
