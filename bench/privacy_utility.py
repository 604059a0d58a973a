"""The demo's privacy-utility frontier: the demo federation (configs/demo.yaml, Br35H, 3 hospitals)
trained at several sample-level budgets and without DP, in the same run; test MCC of each model that
selection picks, next to the epsilon each hospital reached. Needs the running stack and `primia demo`'s data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from primia.config import load_federation_config

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def bench_privacy_utility(epsilons: tuple[float, ...], rounds: int = 0,
                          modes: tuple[str, ...] = ("sample", "client")) -> dict[str, Any]:
    from flows.federated_training import federated_training

    base = load_federation_config(DEMO)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    runs = [(m, e) for m in modes for e in epsilons] + [("off", None)]
    for mode, eps in runs:
        privacy = base.privacy.model_copy(update={"mode": "off"} if eps is None else
                                          {"mode": mode, "target_epsilon": eps})
        update: dict[str, Any] = {"federation_id": f"{base.federation_id}-pu-{mode}-{eps or 0:g}-{stamp}",
                                  "privacy": privacy}
        if rounds:
            update["rounds"] = rounds
        cfg = base.model_copy(update=update)
        started = time.perf_counter()
        summary = federated_training(cfg)
        rows.append({"mode": mode, "target_epsilon": eps,
                     "test_mcc": summary["test"]["mcc"], "test_roc_auc": summary["test"]["roc_auc"],
                     "selected_round": summary["selected_round"], "stopped": summary.get("stopped", ""),
                     "seconds": time.perf_counter() - started})
    return {"config": str(DEMO.name), "rounds": rounds or base.rounds, "rows": rows}
