"""What a committed round holds, and where a federation resumes.

A round's objects: global weights, strategy state (a server optimizer's moments, as safetensors),
RNG state and round metadata (hospital results, selection state, MLflow run, config fingerprint);
the signed manifest that lists them is written last. Hospitals start each round with a fresh local
optimizer, so the server optimizer is the only optimizer state to keep.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from primia.config import FederationConfig
from primia.errors import ConfigError
from primia.federation.coordinator import Selection
from primia.federation.strategy import Strategy, StrategyState
from primia.messages import CheckpointRef, HospitalResult
from primia.privacy import budget
from primia.store import weights as wcodec
from primia.store.checkpoints import CheckpointStore, CommittedRound
from primia.store.weights import Weights

GLOBAL = "global.safetensors"
FINAL_SELECTION = "final-selection.json"
STRATEGY_ARRAYS = "strategy.safetensors"


def load_strategy_state(store: CheckpointStore, server_round: int) -> StrategyState:
    """The strategy state committed with a round (empty for stateless strategies)."""
    committed = store.load_round(server_round)
    meta = store.get_json(committed.ref("strategy.json"))
    arrays = {}
    if STRATEGY_ARRAYS in committed.manifest["objects"]:
        arrays = wcodec.decode(store.get_object(committed.ref(STRATEGY_ARRAYS)), what="strategy state")
    return StrategyState(arrays, int(meta.get("step", 0)))


def config_fingerprint(cfg: FederationConfig) -> str:
    """What must not change between a run and its resumption (rounds, retention and round policy may)."""
    data = cfg.model_dump(mode="json", exclude={"rounds", "checkpoints", "policy"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _rng_state(cfg: FederationConfig, server_round: int) -> dict[str, object]:
    """Per-round seeds are derived from (seed, round, hospital), so a resumed run draws the same
    numbers; the global generators are kept too, for code that draws from them."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "seed": cfg.seed, "next_round": server_round + 1,
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": {"name": name, "keys": np.asarray(keys).tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
    }


def _restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(rng["torch"]), dtype=np.uint8).copy()))
    n = rng["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


def commit_round(
    store: CheckpointStore, cfg: FederationConfig, server_round: int, weights: Weights,
    results: Sequence[HospitalResult], selection: Selection, run_id: str, strategy: Strategy,
    strategy_state: StrategyState,
) -> CommittedRound:
    refs: dict[str, CheckpointRef] = {GLOBAL: store.put_weights(server_round, weights)}
    refs["strategy.json"] = store.put_json(server_round, "strategy.json",
                                           {"name": strategy.name, "step": strategy_state.step})
    if strategy_state.arrays:
        refs[STRATEGY_ARRAYS] = store.put_object(server_round, STRATEGY_ARRAYS, wcodec.encode(strategy_state.arrays))
    refs["rng.json"] = store.put_json(server_round, "rng.json", _rng_state(cfg, server_round))
    refs["round.json"] = store.put_json(server_round, "round.json", {
        "federation": cfg.federation_id, "round": server_round, "config_sha256": config_fingerprint(cfg),
        "mlflow_run_id": run_id, "selection": selection.to_dict(),
        "results": [asdict(r) for r in results],
    })
    # plaintext updates (secure aggregation off) stay in their hospitals' mailboxes; round.json names them
    return store.commit(server_round, refs, budget.statement(cfg, budget.reported(results)))


@dataclass(frozen=True)
class ResumePoint:
    round: int
    global_ref: CheckpointRef
    selection: Selection
    run_id: str


def resume_point(store: CheckpointStore, cfg: FederationConfig) -> ResumePoint | None:
    """The last committed round of this federation, verified, or None for a fresh start."""
    latest = store.resume_round()
    if latest is None:
        return None
    meta = store.get_json(latest.ref("round.json"))
    if meta["config_sha256"] != config_fingerprint(cfg):
        raise ConfigError(
            f"federation {cfg.federation_id!r} already has committed rounds from a different config: resume "
            "with the same config (only rounds and checkpoints may change) or choose a new federation_id"
        )
    _restore_rng(store.get_json(latest.ref("rng.json")))
    selection = store.find_json(latest.round, FINAL_SELECTION) or meta["selection"]
    return ResumePoint(latest.round, latest.ref(GLOBAL), Selection.from_dict(selection), meta["mlflow_run_id"])


def remember_final_validation(store: CheckpointStore, server_round: int, selection: Selection) -> None:
    """The selection after the last model's validation pass, beside its round: a resumed federation
    neither asks for that validation again (a second sum of the same model's figures over another set
    of hospitals would give the difference; hospitals refuse it) nor forgets it."""
    store.put_json(server_round, FINAL_SELECTION, selection.to_dict())
