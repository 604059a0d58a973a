"""privacy-audit: after every round, attack what a curious coordinator could see and judge it.

Started by the `primia.round.completed` event through the deployment's trigger (prefect.yaml), or as a
sub-flow of federated-training in embedded mode. The round's model and the coordinator's own audit
images -> the hospitals' membership audit (where the members are) -> the one-run DP check with canaries
(when configured) -> gradient inversion against one hospital's update and the securely aggregated mean,
in what is left of the time budget -> the verdict against mlflow/audit-policy.yaml on the round's MLflow
run and its model versions, a Prefect artifact, and the `primia.audit.completed` event promotion reads.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from tasks.audit import attack_updates, canary_audit, membership_audit, open_audit, record_verdict


@flow(name="privacy-audit", persist_result=False, flow_run_name="audit-{event[federation]}-round-{event[round]}")
def privacy_audit(event: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    cfg, rnd = open_audit(event)
    membership, cut = membership_audit(cfg, rnd)
    canaries = canary_audit(cfg, rnd)
    left = cfg.audit.time_budget_s - (time.perf_counter() - started)
    attacks = attack_updates(cfg, rnd, left)
    return record_verdict(cfg, rnd, attacks, membership, canaries, started, cut)
