"""A hospital agent's answer to one dispatch (distributed mode), without Prefect.

The coordinator sends references only: the round, the global checkpoint, the training spec and a
fresh nonce. The agent trains on data only it knows (its own settings), uploads the update through
the store, signs a small result (update reference and sha256, num_examples, metrics, the nonce)
with its registered Ed25519 key and stores it where the coordinator will look for it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from primia.config import AgentSettings, HospitalConfig, LocalSpec
from primia.errors import ConfigError
from primia.federation.hospital import SecureJoin, run_local_round, run_local_statistics
from primia.federation.identity import Identity
from primia.federation.signed import SignedResult, sign_result, to_dict
from primia.messages import CheckpointRef
from primia.secure.protocol import Params, ProtocolViolation
from primia.store.checkpoints import CheckpointStore


def result_name(hospital: str, nonce: str) -> str:
    """Object name of a hospital's signed answer to one dispatch (inside the round's prefix)."""
    return f"results/{hospital}-{nonce[:16]}.json"


def hospital_config(agent: AgentSettings) -> HospitalConfig:
    if agent.name is None or agent.data is None:
        raise ConfigError("hospital agent settings: PRIMIA_HOSPITAL__NAME and PRIMIA_HOSPITAL__DATA__PATH must be set")
    return HospitalConfig(name=agent.name, data=agent.data)


def check_plan(agent: AgentSettings, train: bool, stats: bool, secagg: dict[str, Any] | None) -> None:
    """The hospital's own privacy floor: refuse a dispatch that would send an update or statistics in
    the clear, or aggregate with a weaker threshold, when its settings require better."""
    sends = train or stats
    if sends and secagg is None and agent.require_secure_aggregation:
        raise ConfigError(f"hospital {agent.name} requires secure aggregation (PRIMIA_HOSPITAL__REQUIRE_SECURE_"
                          f"AGGREGATION) and the coordinator asked for a plaintext update: refused")
    if sends and secagg is not None:
        try:
            fraction = Params.from_dict(secagg["params"]).threshold_fraction
        except (TypeError, KeyError, ProtocolViolation) as exc:
            raise ConfigError(f"hospital {agent.name}: the dispatch's secure-aggregation plan is malformed: {exc}") \
                from None
        if fraction < agent.min_threshold_fraction:
            raise ConfigError(f"hospital {agent.name} requires a secure-aggregation threshold fraction of at least "
                              f"{agent.min_threshold_fraction} and was offered {fraction}: refused")


def answer_dispatch(
    agent: AgentSettings, identity: Identity, store: CheckpointStore, server_round: int,
    global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str, train: bool = True,
    secure: SecureJoin | None = None, stats: bool = False,
) -> SignedResult:
    hospital = hospital_config(agent)
    if identity.public.hospital != hospital.name:
        raise ConfigError(f"identity belongs to {identity.public.hospital!r}, agent is {hospital.name!r}")
    local_spec = LocalSpec.model_validate(spec)
    if stats:
        result = run_local_statistics(hospital, server_round, local_spec, nonce, secure)
    elif global_ref is None:
        raise ConfigError(f"round {server_round}: a training dispatch needs the global model's reference")
    else:
        result = run_local_round(hospital, server_round, CheckpointRef(**global_ref), local_spec, store, train,
                                 nonce, secure)
    signed = sign_result(identity.signing, local_spec.federation_id, result)
    store.put_json(server_round, result_name(hospital.name, nonce), to_dict(signed))
    return signed


def ref_dict(ref: CheckpointRef) -> dict[str, Any]:
    return asdict(ref)
