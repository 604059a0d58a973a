"""Tasks of the centralized baseline."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from primia import runtime
from primia.config import FederationConfig
from primia.messages import CheckpointRef, HospitalResult
from primia.training.centralized import CentralizedTrainer


@task(name="prepare-centralized", cache_policy=NO_CACHE, persist_result=False)
def prepare_centralized(cfg: FederationConfig) -> CentralizedTrainer:
    return CentralizedTrainer(cfg)


@task(name="centralized-epoch", cache_policy=NO_CACHE, persist_result=False, task_run_name="epoch-{epoch}")
def centralized_epoch(trainer: CentralizedTrainer, epoch: int, protect: int) -> tuple[HospitalResult, CheckpointRef]:
    """Train one epoch and commit the weights as a checkpoint (under `<federation>-centralized`)."""
    result = trainer.run_epoch(epoch)
    store = runtime.checkpoints(f"{trainer.cfg.federation_id}-centralized")
    ref = store.put_weights(epoch, trainer.weights())
    store.commit(epoch, {"global.safetensors": ref})
    store.apply_retention(trainer.cfg.checkpoints.keep_last, protect={protect, epoch})
    return result, ref
