"""The `primia.round.completed` event's payload as the audit reads it: checked field by field (the
trigger renders it from JSON; a malformed one is refused with the field named)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from primia.audit.plan import RoundFacts
from primia.errors import ConfigError, IntegrityError
from primia.messages import CheckpointRef
from primia.store import digest as dg

ROUND_COMPLETED = "primia.round.completed"


@dataclass(frozen=True)
class AuditRound:
    federation_id: str
    server_round: int
    checkpoint: CheckpointRef
    run_id: str
    hospitals: tuple[str, ...]
    num_examples: int
    secure_aggregation: bool

    def facts(self, parameters: int) -> RoundFacts:
        return RoundFacts(len(self.hospitals), self.num_examples, self.secure_aggregation, parameters)


def round_event_payload(federation_id: str, server_round: int, ref: CheckpointRef, run_id: str, strategy: str,
                        hospitals: list[str], num_examples: int, secure: bool) -> dict[str, Any]:
    return {"federation": federation_id, "round": server_round, "strategy": strategy,
            "checkpoint": {"bucket": ref.bucket, "key": ref.key, "digest": ref.digest},
            "mlflow_run_id": run_id, "hospitals": list(hospitals), "num_examples": int(num_examples),
            "secure_aggregation": bool(secure)}


def _field(payload: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ConfigError(f"privacy audit: event payload field {name!r} must be {getattr(kind, '__name__', kind)}, "
                          f"got {value!r}")
    return value


def _digest(ck: dict[str, Any]) -> str:
    try:
        return dg.from_entry(ck)
    except IntegrityError as exc:
        raise ConfigError(f"privacy audit: event payload field 'checkpoint': {exc}") from None


def parse_round_event(payload: Any) -> AuditRound:
    if not isinstance(payload, dict):
        raise ConfigError(f"privacy audit: the event payload must be a JSON object, got {type(payload).__name__}")
    ck = _field(payload, "checkpoint", dict)
    server_round = _field(payload, "round", int)
    ref = CheckpointRef(_field(ck, "bucket", str), _field(ck, "key", str), _digest(ck), server_round)
    hospitals = _field(payload, "hospitals", list)
    if not hospitals or not all(isinstance(h, str) for h in hospitals):
        raise ConfigError(f"privacy audit: event payload field 'hospitals' must be a non-empty list of names, "
                          f"got {hospitals!r}")
    return AuditRound(_field(payload, "federation", str), server_round, ref, _field(payload, "mlflow_run_id", str),
                      tuple(hospitals), _field(payload, "num_examples", int),
                      bool(_field(payload, "secure_aggregation", bool)))


def check_round(rnd: AuditRound, committed: CheckpointRef, run_tags: dict[str, str]) -> None:
    """An event names what the audit attacks and which run and versions get the verdict: anyone who can emit
    Prefect events could name another model, so the checkpoint must be the round's committed global model
    (from its signed manifest) and the run the federation's."""
    named = (rnd.checkpoint.bucket, rnd.checkpoint.key, rnd.checkpoint.digest)
    if named != (committed.bucket, committed.key, committed.digest):
        raise IntegrityError(f"privacy audit: the event's checkpoint for {rnd.federation_id} round {rnd.server_round} "
                             f"is not that round's committed global model; refusing to audit it")
    if run_tags.get("primia.federation_id") != rnd.federation_id:
        raise IntegrityError(f"privacy audit: MLflow run {rnd.run_id} is not a training run of {rnd.federation_id}")
