"""Signed hospital results: accepted only from keys active on the signed roster, for this federation and round, once."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.federation.signed import SignedResult, sign_result, verify_result
from primia.messages import CheckpointRef, HospitalResult
from primia.signing import canonical_json


@dataclass
class Entry:
    status: str
    signing_public_key: str


def _pub(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _result(hospital: str, rnd: int) -> HospitalResult:
    ref = CheckpointRef("b", f"federations/f/rounds/{rnd:05d}/updates/{hospital}.safetensors.enc", "ab" * 32, rnd)
    return HospitalResult(hospital, rnd, 120, ref, 0.5, ((5, 1), (2, 7)), 1.25, {"val_samples": 15.0})


def test_accept_then_reject_replay_wrong_round_and_tampering() -> None:
    key = Ed25519PrivateKey.generate()
    registry = {"a": Entry("active", _pub(key))}
    seen: set[str] = set()
    signed = sign_result(key, "f", _result("a", 3))
    verdict = verify_result(signed, registry, "f", 3, seen)  # type: ignore[arg-type]
    assert verdict.accepted and verdict.result == _result("a", 3)
    assert "replay" in verify_result(signed, registry, "f", 3, seen).reason  # type: ignore[arg-type]
    assert "replay: signed for earlier round 3" in verify_result(signed, registry, "f", 4, set()).reason  # type: ignore[arg-type]
    assert "expected 2" in verify_result(signed, registry, "f", 2, set()).reason  # type: ignore[arg-type]
    assert "federation 'f'" in verify_result(signed, registry, "g", 3, set()).reason  # type: ignore[arg-type]
    forged = SignedResult({**signed.payload, "num_examples": 10_000}, signed.signature)
    assert "signature does not verify" in verify_result(forged, registry, "f", 3, set()).reason  # type: ignore[arg-type]


def test_unknown_revoked_and_foreign_keys() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = sign_result(key, "f", _result("a", 1))
    assert "unknown hospital" in verify_result(signed, {}, "f", 1, set()).reason
    revoked = {"a": Entry("revoked", _pub(key))}
    assert verify_result(signed, revoked, "f", 1, set()).reason == "hospital is revoked"  # type: ignore[arg-type]
    impostor = {"a": Entry("active", _pub(other))}
    assert "signature does not verify" in verify_result(signed, impostor, "f", 1, set()).reason  # type: ignore[arg-type]


def test_nonce_binds_an_answer_to_its_dispatch() -> None:
    key = Ed25519PrivateKey.generate()
    registry = {"a": Entry("active", _pub(key))}
    signed = sign_result(key, "f", replace(_result("a", 3), nonce="n1"))
    ok = verify_result(signed, registry, "f", 3, set(), expected_hospital="a", expected_nonce="n1")  # type: ignore[arg-type]
    assert ok.accepted and ok.result is not None and ok.result.nonce == "n1"
    again = verify_result(signed, registry, "f", 3, set(), expected_hospital="a", expected_nonce="n2")  # type: ignore[arg-type]
    assert again.reason == "replay: signed for another dispatch of this round (nonce mismatch)"
    other = verify_result(signed, registry, "f", 3, set(), expected_hospital="b", expected_nonce="n1")  # type: ignore[arg-type]
    assert other.reason == "answer is signed as hospital 'a'"


def test_malformed_payload_is_rejected_not_raised() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign_result(key, "f", _result("a", 3))
    odd = SignedResult({**signed.payload, "surprise": 1}, "")
    odd = SignedResult(odd.payload, base64.b64encode(key.sign(canonical_json(odd.payload))).decode())
    verdict = verify_result(odd, {"a": Entry("active", _pub(key))}, "f", 3, set())  # type: ignore[arg-type]
    assert not verdict.accepted and verdict.reason.startswith("malformed result")
