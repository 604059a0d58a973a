"""Content digests of stored objects, named by their algorithm.

Objects written now are named "blake3:<64 hex>". BLAKE3 hashes a 45 MB checkpoint in 6 ms on one core
of this machine against 23 ms for sha256, and the digest is computed twice per checkpoint (on put and
on get), so it was most of what encryption added to a checkpoint's round trip. A bare 64-hex digest is
the sha256 of an object written before this change; it is still read, so stored federations keep
loading. Any other form is refused: a digest whose algorithm we cannot run verifies nothing.

The digest is a commitment to the ciphertext, not a MAC: the GCM tag does not bind its key, so a key
holder (the coordinator) could otherwise swap in other ciphertext under a name it already signed. It does
not commit to the header (wrapped key, nonce) kept in the object's metadata: a key holder that crafts one
ciphertext valid under two keys could show readers two (mostly uncontrolled) plaintexts by switching the
header. A key commitment in the manifest entry would close that; it is not there yet.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

import blake3

from primia.errors import IntegrityError

CURRENT = "blake3"
_HEX = re.compile(r"[0-9a-f]{64}")


class _Hash(Protocol):
    def update(self, data: Any, /) -> object: ...
    def hexdigest(self) -> str: ...


def _new(algorithm: str) -> _Hash:
    # one thread: the hashes run beside the cipher and the transfer, which need the other core
    return blake3.blake3(max_threads=1) if algorithm == "blake3" else hashlib.sha256()


def algorithm(digest: str) -> str:
    """The algorithm a digest names; IntegrityError for any form we do not verify."""
    name, sep, hexpart = digest.rpartition(":")
    if not sep and _HEX.fullmatch(digest):
        return "sha256"  # written before digests named their algorithm
    if name == "blake3" and _HEX.fullmatch(hexpart):
        return name
    raise IntegrityError(f"digest {digest[:80]!r} is not 'blake3:<64 hex>' or a legacy sha256 (64 hex)")


class Hasher:
    """Incremental digest in the algorithm of `like` (a digest to compare with), or the current one."""

    def __init__(self, like: str | None = None) -> None:
        self.algorithm = CURRENT if like is None else algorithm(like)
        self._h = _new(self.algorithm)

    def update(self, data: Any) -> None:
        self._h.update(data)

    def value(self) -> str:
        hexpart = self._h.hexdigest()
        return hexpart if self.algorithm == "sha256" else f"{self.algorithm}:{hexpart}"


def of(data: Any, like: str | None = None) -> str:
    h = Hasher(like)
    h.update(data)
    return h.value()


def from_entry(entry: Mapping[str, Any], prefix: str = "") -> str:
    """The object digest recorded in a manifest entry, summary or tag set (`prefix` + "digest"; entries
    written before the change carry `prefix` + "sha256")."""
    value = entry.get(prefix + "digest")
    if value is None:
        value = entry.get(prefix + "sha256")
    if not isinstance(value, str):
        raise IntegrityError(f"no {prefix}digest recorded (expected 'blake3:<64 hex>')")
    algorithm(value)
    return value
