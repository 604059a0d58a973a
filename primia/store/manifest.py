"""Round manifests: the list of a round's objects (key, sha256 of the stored bytes, size), signed by
the coordinator with Ed25519. A round is visible to readers only once its manifest exists, and the
manifest is written last, so no half-written round is ever seen."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from primia.errors import IntegrityError
from primia.store.keys import KeyRing

MANIFEST_VERSION = 2  # 2: chained (previous manifest's digest, commit counter)


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def build(federation: str, server_round: int, objects: dict[str, dict[str, Any]], previous: str | None = None,
          counter: int = 1) -> dict[str, Any]:
    return {"version": MANIFEST_VERSION, "federation": federation, "round": server_round, "previous": previous,
            "counter": counter, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "objects": objects}


def sign(body: dict[str, Any], ring: KeyRing) -> bytes:
    signer_id, key = ring.signer()
    signature = base64.b64encode(key.sign(canonical(body))).decode()
    return json.dumps({"body": body, "signer": signer_id, "signature": signature}, sort_keys=True, indent=1).encode()


def verify(raw: bytes, public: Ed25519PublicKey, where: str, federation: str, server_round: int) -> dict[str, Any]:
    """The manifest's body if the coordinator's key signed it and it names this federation and round."""
    try:
        doc = json.loads(raw)
        body, signature = doc["body"], base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"integrity check failed for {where}: manifest is not valid signed JSON") from None
    try:
        public.verify(signature, canonical(body))
    except InvalidSignature:
        raise IntegrityError(f"integrity check failed for {where}: manifest signature does not verify") from None
    if body.get("federation") != federation or body.get("round") != server_round:
        raise IntegrityError(f"integrity check failed for {where}: manifest names federation "
                             f"{body.get('federation')!r} round {body.get('round')!r}")
    return body
