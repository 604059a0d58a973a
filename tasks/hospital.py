"""Tasks that run at a hospital (in embedded mode: in the coordinator's process, on the hospital's data)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from primia import runtime
from primia.config import FederationConfig, HospitalConfig
from primia.federation.hospital import run_local_round, run_local_statistics
from primia.federation.secure_round import hospital_side
from primia.messages import CheckpointRef, HospitalResult
from primia.secure.protocol import Signer, Verifier


@task(name="local-training", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="{hospital.name}-round-{server_round}")
def local_training(
    hospital: HospitalConfig, server_round: int, global_ref: CheckpointRef | None, cfg: FederationConfig,
    train: bool = True, secagg: dict[str, Any] | None = None, keys: tuple[Signer, Verifier] | None = None,
    stats: bool = False,
) -> HospitalResult:
    """Validate the incoming global model, train on local data, upload the update (or take part in
    secure aggregation with the simulation's keys); return its reference. With `stats`: only the
    image intensity moments for input normalisation."""
    store = runtime.checkpoints(cfg.federation_id)
    secure = hospital_side(store, secagg, hospital.name, *keys) if secagg is not None and keys else None
    if stats or global_ref is None:
        return run_local_statistics(hospital, server_round, cfg, secure=secure)
    return run_local_round(hospital, server_round, global_ref, cfg, store, train, secure=secure)
