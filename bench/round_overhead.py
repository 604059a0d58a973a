"""`primia bench round`: per-round overhead of embedded federated training.

Three hospitals with small synthetic image folders train the small CNN for R rounds through the
real `federated-training` flow (Prefect server, MLflow server, S3). Overhead per round is the
round's wall time minus the slowest hospital's local work (validation + training), so it holds
task orchestration, update upload/download, FedAvg and the global checkpoint write; test
evaluation and MLflow/artifact reporting run in the background and overlap the next round.

`baseline_overhead_s` is the floor, measured in the same process: a bare round of the same hospitals'
local work (validation + training) in threads with in-memory FedAvg - no Prefect, no store, no tracking,
no secure aggregation - its wall time minus its slowest hospital's local work, likewise.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from primia.config import FederationConfig, parse_federation_config
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


def bench_round(rounds: int, workdir: Path, secure: bool = True) -> dict[str, Any]:
    from flows.federated_training import federated_training

    raw = synthetic_federation(workdir)
    raw["rounds"] = rounds
    raw["secure_aggregation"] = {"enabled": secure}
    cfg = parse_federation_config(raw, "bench config")
    start = time.perf_counter()
    summary = federated_training(cfg)
    flow_s = time.perf_counter() - start
    base = bare_round_overheads(cfg, rounds)
    from primia import runtime

    return {"rounds": rounds, "hospitals": len(cfg.hospitals), "secure_aggregation": secure,
            "audit_after_round": runtime.settings().audit.after_round,
            **round_figures(summary), "baseline_overhead_s": statistics.median(base),
            "baseline_overhead_s_range": [min(base), max(base)], "flow_s": flow_s}


def bare_round_overheads(cfg: FederationConfig, rounds: int) -> list[float]:
    """Per round after the first: wall time minus the slowest hospital's local work, for the same hospitals'
    validation + training in threads and FedAvg in memory (the floor any orchestration adds to)."""
    from concurrent.futures import ThreadPoolExecutor

    from primia.federation.coordinator import initial_weights
    from primia.federation.fedavg import weighted_average
    from primia.federation.hospital import derive_seed, load_local_data, model_from_weights
    from primia.store.weights import Weights, state_to_numpy
    from primia.training.loops import predict, train_epochs

    spec = cfg.local_spec()
    data = {h.name: load_local_data(h, spec) for h in cfg.hospitals}

    def local(name: str, weights: Weights, rnd: int) -> tuple[Weights, int, float]:
        model = model_from_weights(spec, weights)
        start = time.perf_counter()
        predict(model, data[name].val)
        train_epochs(model, data[name].train, spec.training, spec.data.augment, derive_seed(cfg.seed, rnd, name))
        return state_to_numpy(model.state_dict()), len(data[name].train), time.perf_counter() - start

    weights, overheads = initial_weights(cfg), []
    with ThreadPoolExecutor(len(data)) as pool:
        for rnd in range(1, rounds + 1):
            start = time.perf_counter()
            outs = list(pool.map(lambda n, w=weights, r=rnd: local(n, w, r), data))
            weights = weighted_average([o[0] for o in outs], [o[1] for o in outs])
            overheads.append(time.perf_counter() - start - max(o[2] for o in outs))
    return overheads[1:]


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
