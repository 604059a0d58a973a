"""`primia bench dispatch`: per-round overhead of distributed rounds on real hospital agents.

Three agents (`primia agent start`, each a pinned Prefect process worker with its warm launcher)
serve three small synthetic hospitals; the coordinator runs the real `federated-training` flow in
distributed mode: run_deployment per hospital, secure aggregation through each hospital's bucket,
verification against the signed roster. Overhead per round = round wall time minus the slowest
hospital's local work. The same federation in embedded mode, in the same run, is the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.round_overhead import round_figures, synthetic_federation
from infra.agent import spawn_agent, stop_agent, wait_online
from infra.stack import load_state
from primia import runtime
from primia.config import parse_federation_config

PREFIX = "bench-dispatch"


def _run(raw: dict[str, Any], mode: str) -> dict[str, Any]:
    from flows.federated_training import federated_training

    os.environ["PRIMIA_MODE"] = mode
    runtime.reset()
    try:
        return federated_training(parse_federation_config(raw, f"bench config ({mode})"))
    finally:
        os.environ.pop("PRIMIA_MODE", None)
        runtime.reset()


def bench_dispatch(rounds: int, workdir: Path, poll_seconds: float) -> dict[str, Any]:
    from infra.enrol import enrol

    raw = synthetic_federation(workdir, prefix=PREFIX)
    raw.update(rounds=rounds, policy={"min_hospitals": 3, "round_timeout_s": 300, "round_retries": 0})
    names = [h["name"] for h in raw["hospitals"]]
    home = runtime.settings().home
    entries = [enrol(n, home / "hospitals" / n) for n in names]
    agents = [spawn_agent(n, workdir / n, workdir / "logs" / f"{n}.log", poll_seconds=poll_seconds,
                          env={"PRIMIA_HOSPITAL__REQUIRE_DP": "false"})  # it times orchestration, DP off
              for n in names]
    try:
        for entry, agent, n in zip(entries, agents, names, strict=True):
            wait_online(entry.pool, agent, workdir / "logs" / f"{n}.log")
        embedded = _run({**raw, "federation_id": f"{PREFIX}-emb-{int(time.time())}"}, "embedded")
        distributed_raw = {**raw, "federation_id": f"{PREFIX}-{int(time.time())}",
                           "hospitals": [{"name": n} for n in names]}
        started = time.perf_counter()
        distributed = _run(distributed_raw, "distributed")
        flow_s = time.perf_counter() - started
    finally:
        for agent in agents:
            stop_agent(agent)
    d, e = round_figures(distributed), round_figures(embedded)
    state = load_state(home)
    return {
        "database": state.database if state else "unknown",
        "hospitals": len(names), "rounds": rounds, **d, "flow_s": flow_s,
        "poll_seconds": poll_seconds, "worker_polls_per_minute": len(names) * 60 / poll_seconds,
        "embedded_round_s_median": e["round_s_median"], "embedded_overhead_s_median": e["overhead_s_median"],
        "overhead_over_embedded": d["overhead_s_median"] / max(e["overhead_s_median"], 1e-9),
    }


def side_by_side(rounds: int, poll_seconds: float) -> dict[str, Any]:
    """Both databases in one sitting: each run is its own process (Prefect's client settings are fixed
    at import), the stack restarted on SQLite, then on PostgreSQL, where it is left running."""
    out: dict[str, Any] = {}
    for database in ("sqlite", "postgresql"):
        cmd = [sys.executable, "-m", "primia.cli", "bench", "dispatch", "--json", "--rounds", str(rounds),
               "--poll-seconds", str(poll_seconds), "--database", database]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench dispatch on {database} failed: {done.stderr.strip()[-600:]}")
        out[database] = json.loads(done.stdout.strip().splitlines()[-1])
    pg, lite = out["postgresql"]["overhead_s_median"], out["sqlite"]["overhead_s_median"]
    return {"database": "both", "postgresql_overhead_s_median": pg, "sqlite_overhead_s_median": lite,
            "postgresql_over_sqlite": pg / max(lite, 1e-9), **out}
