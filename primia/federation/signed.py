"""Signed round results: what a hospital returns to the coordinator, and how the coordinator checks it.

A hospital signs (Ed25519, its registered identity) a small canonical payload: federation, round,
hospital, the update's reference and sha256, num_examples and metrics. The coordinator accepts it
only if the signer is registered and active, the signature verifies, federation and round match,
and the same signed payload has not been seen before (replay). Each rejection carries a reason for
the round's artifact; the round goes on without that update.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from primia.messages import CheckpointRef, HospitalResult


class RegistryEntry(Protocol):
    status: str
    signing_public_key: str


@dataclass(frozen=True)
class SignedResult:
    payload: dict[str, Any]
    signature: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.payload)).hexdigest()


@dataclass(frozen=True)
class Verdict:
    hospital: str
    accepted: bool
    reason: str
    result: HospitalResult | None = None


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign_result(key: Ed25519PrivateKey, federation: str, result: HospitalResult) -> SignedResult:
    payload = {"federation": federation, **asdict(result)}
    return SignedResult(payload, base64.b64encode(key.sign(_canonical(payload))).decode())


def _result_from(payload: dict[str, Any]) -> HospitalResult:
    fields = {k: v for k, v in payload.items() if k != "federation"}
    update = fields.get("update")
    fields["update"] = CheckpointRef(**update) if update else None
    fields["val_confusion"] = tuple(tuple(row) for row in fields["val_confusion"])
    return HospitalResult(**fields)


def verify_result(
    signed: SignedResult, registry: dict[str, RegistryEntry], federation: str, expected_round: int, seen: set[str],
) -> Verdict:
    """Accept or reject one signed result; accepted digests are added to `seen`."""
    hospital = str(signed.payload.get("hospital", "?"))
    entry = registry.get(hospital)
    if entry is None:
        return Verdict(hospital, False, "unknown hospital: not in the registry")
    if entry.status != "active":
        return Verdict(hospital, False, f"hospital is {entry.status}")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry.signing_public_key))
        public.verify(base64.b64decode(signed.signature), _canonical(signed.payload))
    except (InvalidSignature, ValueError):
        return Verdict(hospital, False, "signature does not verify against the registered key")
    if signed.payload.get("federation") != federation:
        return Verdict(hospital, False, f"signed for federation {signed.payload.get('federation')!r}")
    if signed.payload.get("round") != expected_round:
        return Verdict(hospital, False, f"signed for round {signed.payload.get('round')}, expected {expected_round}")
    if signed.digest in seen:
        return Verdict(hospital, False, "replay: this signed result was already used")
    seen.add(signed.digest)
    return Verdict(hospital, True, "ok", _result_from(signed.payload))
