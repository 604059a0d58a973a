"""Signed round results: what a hospital returns to the coordinator, and how the coordinator checks it.

A hospital signs (Ed25519, its key on the signed roster) a small canonical payload: federation, round,
hospital, the update's reference and sha256, num_examples and metrics. The coordinator accepts it
only if the signer is active on the roster, the signature verifies, federation and round match,
and the same signed payload has not been seen before (replay). Each rejection carries a reason for
the round's artifact; the round goes on without that update.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.messages import CheckpointRef, HospitalResult
from primia.signing import canonical_json, ed25519_valid


class RegistryEntry(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def signing_public_key(self) -> str: ...


@dataclass(frozen=True)
class SignedResult:
    payload: dict[str, Any]
    signature: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.payload)).hexdigest()


@dataclass(frozen=True)
class Verdict:
    hospital: str
    accepted: bool
    reason: str
    result: HospitalResult | None = None




def sign_result(key: Ed25519PrivateKey, federation: str, result: HospitalResult) -> SignedResult:
    payload = {"federation": federation, **asdict(result)}
    return SignedResult(payload, base64.b64encode(key.sign(canonical_json(payload))).decode())


def _result_from(payload: dict[str, Any]) -> HospitalResult:
    fields = {k: v for k, v in payload.items() if k != "federation"}
    update = fields.get("update")
    fields["update"] = CheckpointRef(**update) if update else None
    fields["val_confusion"] = tuple(tuple(row) for row in fields["val_confusion"])
    return HospitalResult(**fields)


def to_dict(signed: SignedResult) -> dict[str, Any]:
    return {"payload": signed.payload, "signature": signed.signature}


def signed_from_dict(data: dict[str, Any]) -> SignedResult:
    if not isinstance(data.get("payload"), dict) or not isinstance(data.get("signature"), str):
        raise ValueError("a signed result needs a 'payload' mapping and a 'signature' string")
    return SignedResult(data["payload"], data["signature"])


def verify_result(
    signed: SignedResult, registry: Mapping[str, RegistryEntry], federation: str, expected_round: int, seen: set[str],
    expected_hospital: str | None = None, expected_nonce: str | None = None,
) -> Verdict:
    """Accept or reject one signed result; accepted digests are added to `seen`.

    With `expected_nonce` (distributed dispatch) a result must echo this dispatch's challenge: one
    signed for an earlier round or an earlier dispatch is a replay."""
    hospital = str(signed.payload.get("hospital", "?"))
    if expected_hospital is not None and hospital != expected_hospital:
        return Verdict(expected_hospital, False, f"answer is signed as hospital {hospital!r}")
    entry = registry.get(hospital)
    if entry is None:
        return Verdict(hospital, False, "unknown hospital: not on the signed roster")
    if entry.status != "active":
        return Verdict(hospital, False, f"hospital is {entry.status}")
    try:
        signature = base64.b64decode(signed.signature, validate=True)
    except ValueError:
        signature = b""
    if not ed25519_valid(entry.signing_public_key, canonical_json(signed.payload), signature):
        return Verdict(hospital, False, "signature does not verify against the roster's key")
    if signed.payload.get("federation") != federation:
        return Verdict(hospital, False, f"signed for federation {signed.payload.get('federation')!r}")
    signed_round = signed.payload.get("round")
    if isinstance(signed_round, int) and signed_round < expected_round:
        reason = f"replay: signed for earlier round {signed_round}, this is round {expected_round}"
        return Verdict(hospital, False, reason)
    if signed_round != expected_round:
        return Verdict(hospital, False, f"signed for round {signed_round}, expected {expected_round}")
    if expected_nonce is not None and signed.payload.get("nonce") != expected_nonce:
        return Verdict(hospital, False, "replay: signed for another dispatch of this round (nonce mismatch)")
    if signed.digest in seen:
        return Verdict(hospital, False, "replay: this signed result was already used")
    try:
        result = _result_from(signed.payload)
    except (TypeError, ValueError, KeyError) as exc:
        return Verdict(hospital, False, f"malformed result: {exc}")
    seen.add(signed.digest)
    return Verdict(hospital, True, "ok", result)
