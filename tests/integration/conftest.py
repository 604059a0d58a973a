"""Helpers of the integration tests (their fixtures - the live stack, the hospitals' data, the agents - are
registered for every test folder by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from primia import runtime


def federation_raw(root: Path, federation_id: str, rounds: int = 2) -> dict[str, Any]:
    return {
        "federation_id": federation_id, "rounds": rounds, "seed": 3, "class_names": ["class0", "class1"],
        "data": {"image_size": 32, "val_fraction": 0.2, "augment": {"enabled": True}},
        "training": {"batch_size": 16, "lr": 0.01},
        "privacy": {"mode": "off"},  # differential privacy has tests of its own (test_dp_*.py)
        "hospitals": [{"name": s, "data": {"path": str(root / s)}} for s in ("h1", "h2", "h3")],
        "test_data": {"path": str(root / "test")},
    }


def round_one_gap(secure_fid: str, plain_fid: str) -> float:
    """Largest difference of round 1's global weights between two runs of the same federation (same
    start, same local training): secure aggregation's quantization alone. Later rounds train on from
    slightly different weights, so they drift further than the bound."""

    a, b = (runtime.checkpoints(f) for f in (secure_fid, plain_fid))
    wa = a.get_weights(a.load_round(1).ref("global.safetensors"))
    wb = b.get_weights(b.load_round(1).ref("global.safetensors"))
    return max(float(abs(wa[k].astype("float64") - wb[k]).max()) for k in wa)
