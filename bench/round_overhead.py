"""`primia bench round`: per-round overhead of embedded federated training.

Three hospitals with small synthetic image folders train the small CNN for R rounds through the
real `federated-training` flow (Prefect server, MLflow server, S3). Overhead per round is the
round's wall time minus the slowest hospital's local work (validation + training), so it holds
task orchestration, update upload/download, FedAvg and the global checkpoint write; test
evaluation and MLflow/artifact reporting run in the background and overlap the next round.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from primia.config import parse_federation_config
from primia.data.synthetic import make_synthetic, write_image_folder


def synthetic_federation(workdir: Path, hospitals: int = 3, per_hospital: int = 96, size: int = 32,
                         prefix: str = "hospital") -> dict[str, Any]:
    """Write hospital folders and a test folder of synthetic images; return a config dict."""
    workdir.mkdir(parents=True, exist_ok=True)
    sites = [f"{prefix}-{k + 1}" for k in range(hospitals)] + ["test"]
    for k, site in enumerate(sites):
        if not (workdir / site / "groups.csv").exists():
            write_image_folder(make_synthetic(per_hospital, 2, size, seed=100 + k), workdir / site)
    return {
        "federation_id": f"bench-{int(time.time())}",
        "rounds": 5,
        "seed": 1,
        "class_names": ["class0", "class1"],
        "model": {"name": "small_cnn", "num_classes": 2},
        "data": {"image_size": size, "val_fraction": 0.2, "augment": {"enabled": False}},
        "training": {"local_epochs": 1, "batch_size": 16},
        "privacy": {"mode": "off"},  # orchestration overhead, not DP-SGD (see `primia bench dp`)
        "hospitals": [{"name": s, "data": {"path": str(workdir / s)}} for s in sites[:-1]],
        "test_data": {"path": str(workdir / "test")},
    }


def bench_round(rounds: int, workdir: Path) -> dict[str, Any]:
    from flows.federated_training import federated_training

    raw = synthetic_federation(workdir)
    raw["rounds"] = rounds
    cfg = parse_federation_config(raw, "bench config")
    start = time.perf_counter()
    summary = federated_training(cfg)
    flow_s = time.perf_counter() - start
    return {"rounds": rounds, "hospitals": len(cfg.hospitals), **round_figures(summary), "flow_s": flow_s}


def round_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds after the first (round 1 pays one-off costs: data, model, connections)."""
    timed = summary["timings"][1:]
    round_s = [t["round_s"] for t in timed]
    local_s = [t["local_s_max"] for t in timed]
    overhead = [r - loc for r, loc in zip(round_s, local_s, strict=True)]
    return {
        "round_s_median": statistics.median(round_s),
        "local_train_s_median": statistics.median(local_s),
        "overhead_s_median": statistics.median(overhead),
        "overhead_s_min": min(overhead),
        "overhead_s_max": max(overhead),
        "first_round_s": summary["timings"][0]["round_s"],
        "timed_rounds": len(timed),
    }
