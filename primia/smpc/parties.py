"""Who may take part in encrypted inference, and in which role: read from the federation's signed roster.

The data owner is an active hospital (it proves the signing key it enrolled with); the model owner and the
dealer are the roster's active services of those roles. A party authenticates every other against this,
never against an address or what a server says: a link proves a name, and the name's role is the roster's.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from primia.federation.roster import Roster
from primia.smpc.link import Identity, LinkError

MODEL_OWNER, DATA_OWNER, DEALER = "model-owner", "data-owner", "dealer"


@dataclass(frozen=True)
class Parties:
    keys: dict[str, bytes]  # name -> raw Ed25519 public key (bytes: picklable, for spawned parties)
    roles: dict[str, str]  # name -> MODEL_OWNER | DATA_OWNER | DEALER
    valid_until: str = ""  # the roster's: after it nobody is a party (a server must refresh its roster)

    @classmethod
    def from_roster(cls, roster: Roster) -> Parties:
        keys, roles = {}, {}
        for h, e in roster.active().items():
            keys[h], roles[h] = base64.b64decode(e.signing_public_key), DATA_OWNER
        for role in (MODEL_OWNER, DEALER):
            for n, s in roster.active_services(role).items():
                keys[n], roles[n] = base64.b64decode(s.signing_public_key), role
        return cls(keys, roles, roster.valid_until)

    def expired(self) -> bool:
        return bool(self.valid_until) and dt.datetime.fromisoformat(self.valid_until) < dt.datetime.now(dt.UTC)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {n: Ed25519PublicKey.from_public_bytes(k) for n, k in self.keys.items()}

    def of_role(self, role: str) -> frozenset[str]:
        return frozenset(n for n, r in self.roles.items() if r == role)

    def check(self, name: str, role: str) -> str:
        """`name` if the roster gives it `role`; a LinkError naming both otherwise."""
        if self.roles.get(name) != role:
            found = self.roles.get(name)
            raise LinkError(f"{name!r} is {'a ' + found if found else 'not a party'} on the federation's signed "
                            f"roster, not a {role}: refused")
        return name


def throwaway(names: dict[str, str] | None = None) -> tuple[Parties, dict[str, bytes]]:
    """Fresh keys for a run whose three parties all live on this machine (`primia infer --encrypted` without
    endpoints, the bench): the private halves go to the processes that play them, and nowhere else."""
    names = names or {MODEL_OWNER: MODEL_OWNER, DATA_OWNER: DATA_OWNER, DEALER: DEALER}
    keys = {n: Ed25519PrivateKey.generate() for n in names.values()}
    private = {n: k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()) for n, k in keys.items()}
    public = {n: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for n, k in keys.items()}
    return Parties(public, {n: role for role, n in names.items()}), private


def identity(name: str, private: bytes) -> Identity:
    return Identity(name, Ed25519PrivateKey.from_private_bytes(private))
