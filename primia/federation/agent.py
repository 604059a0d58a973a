"""A hospital's answer to one dispatch, the same in both modes, without Prefect.

The coordinator sends references only (`primia.federation.rounds.Dispatch`). The hospital trains on
data only it knows, takes part in secure aggregation (its plan checked against the hospital's own
floors and the signed roster), signs a small result with its roster key and stores it in its own
mailbox, where the coordinator looks for it.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.config import AgentSettings, HospitalConfig, LocalSpec
from primia.errors import ConfigError
from primia.federation.hospital import SecureJoin, run_local_round, run_local_statistics
from primia.federation.hospital_audit import run_membership_audit
from primia.federation.rounds import Dispatch, result_name
from primia.federation.signed import SignedResult, sign_result, to_dict
from primia.messages import CheckpointRef
from primia.privacy.keeper import AccountKeeper, Record
from primia.secure.protocol import Floors, Params, ProtocolViolation
from primia.store.checkpoints import CheckpointStore


def hospital_config(agent: AgentSettings) -> HospitalConfig:
    if agent.name is None or agent.data is None:
        raise ConfigError("hospital agent settings: PRIMIA_HOSPITAL__NAME and PRIMIA_HOSPITAL__DATA__PATH must be set")
    return HospitalConfig(name=agent.name, data=agent.data, target_epsilon=agent.target_epsilon, delta=agent.delta)


def check_plan(agent: AgentSettings, train: bool, stats: bool, secagg: dict[str, Any] | None,
               privacy_mode: str = "sample", audit: bool = False) -> None:
    """The hospital's own privacy floor: refuse a dispatch that would send an update, statistics or a
    validation confusion matrix in the clear, train without differential privacy, or aggregate with a
    weaker threshold, when its settings require better; a membership audit (figures only, in the clear)
    only when the hospital takes part in audits."""
    if audit:
        if train or stats or secagg is not None:  # else "audit" would carry an update past the floor below
            raise ConfigError(f"hospital {agent.name}: a membership-audit dispatch neither trains, sends statistics "
                              f"nor aggregates: refused")
        if not agent.membership_audit:
            raise ConfigError(f"hospital {agent.name} does not take part in membership audits "
                              f"(PRIMIA_HOSPITAL__MEMBERSHIP_AUDIT=false): refused")
        return
    if train and agent.require_dp and privacy_mode == "off":
        raise ConfigError(f"hospital {agent.name} requires differential privacy (PRIMIA_HOSPITAL__REQUIRE_DP) and the "
                          f"federation's plan has privacy.mode off: refused")
    if secagg is None and agent.require_secure_aggregation:
        what = "an update" if train else "image statistics" if stats else "a validation confusion matrix"
        raise ConfigError(f"hospital {agent.name} requires secure aggregation (PRIMIA_HOSPITAL__REQUIRE_SECURE_"
                          f"AGGREGATION) and the coordinator asked for {what} in the clear: refused")
    if secagg is not None:
        try:
            fraction = Params.from_dict(secagg["params"]).threshold_fraction
        except (TypeError, KeyError, ProtocolViolation) as exc:
            raise ConfigError(f"hospital {agent.name}: the dispatch's secure-aggregation plan is malformed: {exc}") \
                from None
        if fraction < agent.min_threshold_fraction:
            raise ConfigError(f"hospital {agent.name} requires a secure-aggregation threshold fraction of at least "
                              f"{agent.min_threshold_fraction} and was offered {fraction}: refused")


def floors(agent: AgentSettings, spec: LocalSpec, members: frozenset[str] | None) -> Floors:
    return Floors(members=members, min_parties=agent.min_parties, max_parties=spec.secure_aggregation.max_hospitals,
                  min_threshold_fraction=agent.min_threshold_fraction, colluders=agent.colluders)


def answer(hospital: HospitalConfig, key: Ed25519PrivateKey, store: CheckpointStore, outbox: CheckpointStore,
           d: Dispatch, spec: LocalSpec, secure: SecureJoin | None = None, seed_salt: str = "",
           record: Record | None = None) -> SignedResult:
    """Run the hospital's part of the round, then sign and store its answer in its own mailbox."""
    if d.stats:
        result = run_local_statistics(hospital, d.server_round, spec, d.nonce, secure)
    elif d.audit:
        if d.global_ref is None:
            raise ConfigError(f"round {d.server_round}: a membership-audit dispatch needs the round's global model")
        result = run_membership_audit(hospital, d.server_round, d.global_ref, spec, store, d.nonce)
    elif d.global_ref is None:
        raise ConfigError(f"round {d.server_round}: a training or validation dispatch needs the global model")
    else:
        keeper = AccountKeeper(outbox, record, hospital.name) if record is not None else None
        result = run_local_round(hospital, d.server_round, d.global_ref, spec, store, d.train, d.nonce, secure,
                                 seed_salt, outbox, d.validate, keeper)
    signed = sign_result(key, spec.federation_id, result)
    outbox.put_json(d.server_round, result_name(hospital.name, d.nonce), to_dict(signed))
    return signed


def dispatch_from(server_round: int, global_ref: dict[str, Any] | None, nonce: str, train: bool, stats: bool,
                  secagg: dict[str, Any] | None, validate: bool = True, audit: bool = False) -> Dispatch:
    """A dispatch from the parameters of a `local-training` flow run."""
    try:
        ref = CheckpointRef(**global_ref) if global_ref else None
    except TypeError as exc:
        raise ConfigError(f"round {server_round}: the global model reference is malformed ({exc})") from None
    return Dispatch(server_round, ref, train, stats, nonce, secagg, validate, audit)
