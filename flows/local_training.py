"""local-training: a hospital's part of one round, run by the hospital's own agent (distributed mode).

Deployed once per hospital work pool (`hospital-NAME`, see prefect.yaml and `primia agent start`);
the coordinator starts it with `run_deployment`, passing references only. Data path and keys come
from the agent's own settings and never leave the hospital; everything it receives is checked against
the federation's signed roster and the hospital's own floors, not against the coordinator's servers.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

from prefect import flow, get_run_logger

from primia import runtime
from primia.config import LocalSpec
from primia.errors import ConfigError, IntegrityError, PrimiaError, PrivacyError, StoreError
from primia.federation.agent import answer, check_plan, dispatch_from, floors, hospital_config
from primia.federation.secure_round import hospital_side
from primia.privacy.keeper import FileRecord
from primia.secure.ledger import FileLedger
from primia.secure.plan import ProtocolViolation, SecAggAbort
from tasks import secagg_events

# Reasons that name only the protocol, the roster and the stores: the coordinator may read them. Anything
# else (a data error names the hospital's folders and classes) is told only as its kind.
SAFE_TO_SAY = (ProtocolViolation, SecAggAbort, ConfigError, IntegrityError, StoreError, PrivacyError)


class HospitalError(PrimiaError):
    """A hospital's part of a round failed; what went wrong stays at the hospital."""


@flow(name="local-training", persist_result=False, log_prints=False)
def local_training(
    server_round: int, global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str, train: bool = True,
    secagg: dict[str, Any] | None = None, stats: bool = False, validate: bool = True, audit: bool = False,
) -> dict[str, Any]:
    """Validate the incoming global model, train on local data, and contribute the update, counts and
    validation figures - under secure aggregation only in masked form; store a signed answer. With
    `stats` (before round 1) it only contributes its image intensity moments for input normalisation; with
    `audit` (the privacy audit, after a round) only the membership figures of that round's global model."""
    agent = runtime.settings().hospital
    try:
        return _answer(server_round, global_ref, spec, nonce, train, secagg, stats, validate, audit)
    except SAFE_TO_SAY:
        raise
    except Exception as exc:  # noqa: BLE001  # a data error names local paths and classes: keep them here
        print(f"primia hospital {agent.name}: round {server_round} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)  # the agent's own log, on the hospital's machine
        raise HospitalError(f"hospital {agent.name}: its part of round {server_round} failed "
                            f"({type(exc).__name__}); the details stay in the hospital's own agent log") from None


def _answer(server_round: int, global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str, train: bool,
            secagg: dict[str, Any] | None, stats: bool, validate: bool, audit: bool) -> dict[str, Any]:
    agent, logger = runtime.settings().hospital, get_run_logger()
    local_spec = LocalSpec.model_validate(spec)
    check_plan(agent, train, stats, secagg, local_spec.privacy.mode, audit)  # its floor, before anything is read
    roster, identity, hospital = runtime.roster(), runtime.identity(), hospital_config(agent)
    entry = roster.active().get(hospital.name)
    if entry is None or entry.fingerprint != identity.public.fingerprint:
        raise ConfigError(f"hospital {hospital.name} is not active on the signed roster with these keys: refused")
    store = runtime.checkpoints(local_spec.federation_id)  # the coordinator's: global models, rosters
    outbox = runtime.checkpoints(local_spec.federation_id, entry.bucket)  # its own: messages, answers
    d = dispatch_from(server_round, global_ref, nonce, train, stats, secagg, validate, audit)
    secure = None
    if secagg is not None:
        secure = hospital_side(store, outbox, secagg, hospital.name, identity.signing.sign, roster.verifier(),
                               roster.coordinator_check, floors(agent, local_spec, frozenset(roster.active())),
                               FileLedger(runtime.hospital_keys_dir() / "unmask-ledger.json"),
                               d.expected(local_spec.federation_id), runtime.settings().store.message_poll_s)
        secagg_events.listen(local_spec.federation_id, "roster", secure.channel.params.session)
    salt = secrets.token_hex(8) if agent.fresh_randomness else ""
    record = FileRecord(runtime.hospital_keys_dir() / "privacy-record.json")  # its floor under the stored account
    signed = answer(hospital, identity.signing, store, outbox, d, local_spec, secure, salt, record)
    logger.info("%s round %d: answered (%s), %.2f s local", hospital.name, server_round,
                "membership figures" if audit else "masked" if secure is not None else "in the clear",
                signed.payload["local_s"])
    return {"hospital": hospital.name, "round": server_round, "digest": signed.digest}
