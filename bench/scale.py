"""`primia bench scale`: many hospitals in embedded mode for many rounds (default 20 x 30), secure
aggregation on: the round overhead and the coordinator's resident memory after every round (VmRSS from
/proc, the process that runs the flow and every simulated hospital), to show it stays flat."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.round_overhead import bare_round_overheads, round_figures, synthetic_federation


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def bench_scale(workdir: Path, hospitals: int = 20, rounds: int = 30) -> dict[str, Any]:
    from flows.federated_training import federated_training
    from primia import progress
    from primia.config import parse_federation_config

    raw = synthetic_federation(workdir, hospitals=hospitals, per_hospital=48, prefix="site")
    raw |= {"rounds": rounds, "policy": {"min_hospitals": hospitals, "sample_fraction": 1.0},
            "secure_aggregation": {"enabled": True, "max_hospitals": max(16, hospitals)}}
    cfg = parse_federation_config(raw, "bench scale config")
    rss: dict[int, float] = {}
    stop = progress.subscribe(lambda event, f: rss.__setitem__(int(f["round"]), rss_mb()) if event == "round" else None)
    start = time.perf_counter()
    try:
        summary = federated_training(cfg)
    finally:
        stop()
    figures = round_figures(summary)
    base = bare_round_overheads(cfg, min(rounds, 6))
    last = max(rss)
    from primia import runtime

    return {"hospitals": hospitals, "rounds": rounds, "audit_after_round": runtime.settings().audit.after_round,
            "overhead_s_median": figures["overhead_s_median"],
            "round_s_median": figures["round_s_median"], "local_train_s_median": figures["local_train_s_median"],
            "baseline_overhead_s": statistics.median(base), "rss_mb_round5": round(rss[min(5, last)], 1),
            "rss_mb_last": round(rss[last], 1), "rss_growth": round(rss[last] / rss[min(5, last)] - 1, 4),
            "rss_mb_by_round": [round(rss[r], 1) for r in sorted(rss)], "flow_s": time.perf_counter() - start,
            "machine": "2-core CPU"}
