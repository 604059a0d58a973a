"""Deployment entry points that take a config file path (what a schedule can pass), not a config object."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.federated_training import federated_training
from primia.config import load_federation_config


@flow(name="federated-training-from-file", flow_run_name="{config_path}", persist_result=False)
def federated_training_from_file(config_path: str) -> dict[str, Any]:
    """Read the federation config file, then run `federated-training` (resuming if it was interrupted)."""
    return federated_training(load_federation_config(config_path))
