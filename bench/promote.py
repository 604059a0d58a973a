"""`primia bench promote`: what the registry adds to the demo.

Trains the demo federation (configs/demo.yaml: Br35H, 3 hospitals, DP-SGD) for a few rounds against
the running stack, with promotion as a sub-flow, and reports the release's steps: logging the pyfunc
(`log_model_s`), registering the version with its card (`register_s`), the promote-model flow
(`promote_s`: both models loaded from the registry and scored on the held-out set, three gates,
tags) and loading the new version by URI and predicting two raw PNGs (`load_predict_s`).
`release_s`: the whole release task (the above plus re-scoring the checkpoint, the bootstrap
intervals and the card). `share_of_run`: (release + promote) / the whole run's wall time. The demo trains 20 rounds, so
the share of a full `make demo` is smaller than this one's (`rounds` default 3).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

IMAGES = {".png", ".jpg", ".jpeg"}
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def bench_promote(rounds: int, repeats: int) -> dict[str, Any]:
    import mlflow
    from flows.federated_training import federated_training
    from primia import runtime
    from primia.config import load_federation_config

    os.environ["PRIMIA_PROMOTION__AFTER_TRAINING"] = "subflow"
    runtime.reset()
    base = load_federation_config(DEMO)
    runs: list[dict[str, float]] = []
    for k in range(repeats):
        cfg = base.model_copy(update={"federation_id": f"bench-promote-{int(time.time())}-{k}", "rounds": rounds})
        started = time.perf_counter()
        summary = federated_training(cfg)
        wall = time.perf_counter() - started
        reg = summary["registry"]
        t0 = time.perf_counter()
        model = mlflow.pyfunc.load_model(reg["model_uri"])
        files = [f for f in sorted(Path(base.test_data.path).rglob("*")) if f.suffix.lower() in IMAGES][:2]
        model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
        load_predict = time.perf_counter() - t0
        promote = reg["promotion"]["promote_s"]
        runs.append({"log_model_s": reg["log_model_s"], "register_s": reg["register_s"], "promote_s": promote,
                     "load_predict_s": load_predict, "run_s": wall,
                     "release_s": reg["release_s"], "share_of_run": (reg["release_s"] + promote) / wall,
                     "decision": reg["promotion"]["action"]})
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs)
                           for k in ("log_model_s", "register_s", "release_s", "promote_s", "load_predict_s",
                                     "run_s", "share_of_run")}
    out |= {"rounds": rounds, "repeats": repeats, "runs": runs}
    return out
