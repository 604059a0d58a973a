"""The coordinator's side of secure aggregation in a round (SecAgg+ through the object store)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from primia import runtime
from primia.config import FederationConfig
from primia.federation.secure_round import SecureOutcome, coordinate
from primia.messages import CheckpointRef
from primia.secure.protocol import Verifier
from primia.secure.transport import Gone


@task(name="secure-aggregation", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="secure-aggregation-{server_round}")
def secure_aggregation(cfg: FederationConfig, server_round: int, round_plan: dict[str, Any],
                       global_ref: CheckpointRef | None, verify: Verifier, started: float, gone: Gone
                       ) -> SecureOutcome:
    """Collect masked updates and unmask only their weighted sum; raises SecAggAbort below threshold."""
    return coordinate(runtime.checkpoints(cfg.federation_id), cfg, round_plan, global_ref, verify, started,
                      cfg.policy.round_timeout_s, gone, cfg.policy.min_hospitals)
