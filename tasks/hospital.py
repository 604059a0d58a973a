"""Tasks that run at a hospital (in embedded mode: in the coordinator's process, on the hospital's data)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from primia import runtime
from primia.config import FederationConfig, HospitalConfig
from primia.federation.hospital import run_local_round
from primia.messages import CheckpointRef, HospitalResult


@task(name="local-training", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="{hospital.name}-round-{server_round}")
def local_training(
    hospital: HospitalConfig, server_round: int, global_ref: CheckpointRef, cfg: FederationConfig, train: bool = True
) -> HospitalResult:
    """Validate the incoming global model, train on local data, upload the update; return its reference."""
    return run_local_round(hospital, server_round, global_ref, cfg, runtime.checkpoints(cfg.federation_id), train)
