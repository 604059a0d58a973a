"""promote-model: the registry's gatekeeper.

With a version (what the `primia.training.completed` trigger passes): evaluate it and the current
champion on the coordinator's held-out set, check the quality, privacy and audit gates of
mlflow/promotion.yaml, move `champion` only if all pass, and tag and report every gate's figures.
Without one (the nightly schedule): re-check each federation's champion against today's policy and
demote it, with the reason, if a gate now fails.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.model_registry import federation_models, gate_version, recheck_champion


@flow(name="promote-model", persist_result=False)
def promote_model(model_name: str = "", version: str = "", policy_path: str = "") -> dict[str, Any]:
    if version:
        if not model_name:
            raise ValueError("promote-model: a version needs its model_name")
        return gate_version(model_name, str(version), policy_path)
    names = [model_name] if model_name else federation_models()
    return {"rechecked": [recheck_champion(n, policy_path) for n in names]}
