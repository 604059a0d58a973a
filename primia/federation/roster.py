"""The federation's signed roster: the one trust root every party checks, and the coordinator cannot forge.

A federation authority (an Ed25519 key the consortium keeps offline) signs a versioned roster: each
hospital's name, public keys, fingerprint, storage identity (its bucket) and status, and the
coordinator's public signing key and bucket. Each hospital pins the authority's public key when it
enrols and accepts only a correctly signed roster whose version is not lower than the last one it saw;
revocation is a new version. Hospitals verify their peers' messages, the coordinator's rosters, abort
notices and manifests against this roster only - never against what the coordinator's servers say
(the Prefect blocks are a read-only view of it for the UI).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.errors import ConfigError, IntegrityError
from primia.federation.identity import PublicIdentity
from primia.private_files import read_private_json, write_private_json
from primia.signing import Verifier, canonical_json, ed25519_valid, verifier_for

ROSTER_KIND = "primia-roster-v1"
ROSTER_KEY = "roster/roster.json"  # in the coordinator's bucket
ACTIVE, REVOKED = "active", "revoked"
SERVICE_ROLES = ("model-owner", "dealer")  # encrypted inference's services (the data owner is a hospital)


def hospital_bucket(hospital: str) -> str:
    """Each hospital writes only into its own bucket (S3 policies scope to buckets)."""
    name = f"primia-h-{hospital}"
    return name if len(name) <= 63 else f"primia-h-{hashlib.sha256(hospital.encode()).hexdigest()[:20]}"


@dataclass(frozen=True)
class HospitalEntry:
    hospital: str
    signing_public_key: str  # Ed25519, base64 raw
    agreement_public_key: str  # X25519, base64 raw
    fingerprint: str
    bucket: str
    status: str = ACTIVE
    work_pool: str = ""

    @property
    def pool(self) -> str:
        return self.work_pool or f"hospital-{self.hospital}"


@dataclass(frozen=True)
class ServiceEntry:
    """A party of encrypted inference that is not a hospital: the model owner serving the champion, or the
    dealer handing out correlated randomness. Its key is what the other parties authenticate it by."""

    name: str
    role: str  # one of SERVICE_ROLES
    signing_public_key: str  # Ed25519, base64 raw
    fingerprint: str
    status: str = ACTIVE


@dataclass(frozen=True)
class Roster:
    name: str
    version: int
    coordinator_key: str  # Ed25519 public key of the coordinator (manifests, rosters, aborts), base64 raw
    coordinator_bucket: str
    hospitals: dict[str, HospitalEntry] = field(default_factory=dict)
    created: str = ""
    valid_until: str = ""  # ISO time; after it the roster is refused (a coordinator cannot keep withholding
    # a newer version, e.g. a revocation, for longer than this)
    services: dict[str, ServiceEntry] = field(default_factory=dict)

    def active(self) -> dict[str, HospitalEntry]:
        return {h: e for h, e in self.hospitals.items() if e.status == ACTIVE}

    def verifier(self) -> Verifier:
        """Checks a hospital's signature against its key here (revoked and unknown hospitals never verify)."""
        return verifier_for({h: e.signing_public_key for h, e in self.active().items()})

    def coordinator_check(self, message: bytes, signature: bytes) -> bool:
        return ed25519_valid(self.coordinator_key, message, signature)

    def body(self) -> dict[str, Any]:
        return {"kind": ROSTER_KIND, "name": self.name, "version": self.version, "created": self.created,
                "valid_until": self.valid_until,
                "coordinator": {"signing_public_key": self.coordinator_key, "bucket": self.coordinator_bucket},
                "hospitals": {h: asdict(e) for h, e in sorted(self.hospitals.items())},
                # only when there are any: rosters signed before services existed keep their exact bytes
                **({"services": {n: asdict(e) for n, e in sorted(self.services.items())}} if self.services else {})}

    def active_services(self, role: str) -> dict[str, ServiceEntry]:
        return {n: e for n, e in self.services.items() if e.status == ACTIVE and e.role == role}

    @staticmethod
    def from_body(body: dict[str, Any]) -> Roster:
        try:
            if body["kind"] != ROSTER_KIND:
                raise ValueError(f"kind {body['kind']!r}")
            hospitals = {h: HospitalEntry(**e) for h, e in body["hospitals"].items()}
            if any(e.hospital != h for h, e in hospitals.items()):
                raise ValueError("an entry is filed under another hospital's name")
            services = {n: ServiceEntry(**e) for n, e in body.get("services", {}).items()}
            if any(e.name != n or e.role not in SERVICE_ROLES for n, e in services.items()):
                raise ValueError(f"a service is filed under another name or has a role not in {SERVICE_ROLES}")
            if set(services) & set(hospitals):
                raise ValueError(f"{sorted(set(services) & set(hospitals))} named both a hospital and a service")
            return Roster(str(body["name"]), int(body["version"]), str(body["coordinator"]["signing_public_key"]),
                          str(body["coordinator"]["bucket"]), hospitals, str(body.get("created", "")),
                          str(body.get("valid_until", "")), services)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(f"roster is malformed ({type(exc).__name__}: {exc})") from None

    def with_hospital(self, public: PublicIdentity, bucket: str | None = None) -> Roster:
        if public.hospital in self.services:  # a roster naming one twice would be refused by every party
            raise ConfigError(f"{public.hospital!r} is a service on the roster: a hospital needs a name of its own")
        if public.hospital in self.hospitals and self.hospitals[public.hospital].status == ACTIVE:
            raise ConfigError(f"hospital {public.hospital!r} is already on the roster (fingerprint "
                              f"{self.hospitals[public.hospital].fingerprint}): revoke it first to enrol new keys")
        entry = HospitalEntry(public.hospital, public.signing_public, public.agreement_public, public.fingerprint,
                              bucket or hospital_bucket(public.hospital), ACTIVE, f"hospital-{public.hospital}")
        return replace(self, hospitals={**self.hospitals, public.hospital: entry})

    def with_service(self, public: PublicIdentity, role: str) -> Roster:
        name = public.hospital  # a service's identity file is a hospital's format: the name is its own
        if role not in SERVICE_ROLES:
            raise ConfigError(f"service role {role!r}: expected one of {', '.join(SERVICE_ROLES)}")
        if name in self.hospitals:
            raise ConfigError(f"{name!r} is a hospital on the roster: a service needs a name of its own")
        if name in self.services and self.services[name].status == ACTIVE:
            raise ConfigError(f"service {name!r} is already on the roster (fingerprint "
                              f"{self.services[name].fingerprint}): revoke it first to enrol new keys")
        entry = ServiceEntry(name, role, public.signing_public, fingerprint_of(public.signing_public))
        return replace(self, services={**self.services, name: entry})

    def without_hospital(self, hospital: str) -> Roster:
        if hospital in self.services:
            return replace(self, services={**self.services, hospital: replace(self.services[hospital],
                                                                              status=REVOKED)})
        if hospital not in self.hospitals:
            raise ConfigError(f"hospital {hospital!r} is not on the roster (on it: {sorted(self.hospitals) or 'none'})")
        entry = replace(self.hospitals[hospital], status=REVOKED)
        return replace(self, hospitals={**self.hospitals, hospital: entry})


def simulate(names: list[str], coordinator_key: str, bucket: str, version: int = 1
             ) -> tuple[dict[str, Ed25519PrivateKey], Roster]:
    """An embedded simulation's roster: fresh hospital keys (made per round), the real coordinator key.
    Every check a hospital makes against the signed roster runs against this one."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    keys = {n: Ed25519PrivateKey.generate() for n in names}
    entries = {}
    for n, k in keys.items():
        agreement = X25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                          serialization.PublicFormat.Raw)
        public = PublicIdentity(n, authority_public(k), base64.b64encode(agreement).decode())
        entries[n] = HospitalEntry(n, public.signing_public, public.agreement_public, public.fingerprint, bucket)
    return keys, Roster("simulation", version, coordinator_key, bucket, entries)


# ------------------------------------------------------------------ signing and opening
def authority_public(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def fingerprint_of(public_b64: str) -> str:
    return hashlib.sha256(public_b64.encode()).hexdigest()[:16]


def sign(roster: Roster, authority: Ed25519PrivateKey, valid_days: float = 90) -> dict[str, Any]:
    """A new version of the roster, signed by the authority, valid for `valid_days`."""
    now = dt.datetime.now(dt.UTC)
    body = replace(roster, created=now.isoformat(timespec="seconds"),
                   valid_until=(now + dt.timedelta(days=valid_days)).isoformat(timespec="seconds")).body()
    return {"body": body, "authority": fingerprint_of(authority_public(authority)),
            "signature": base64.b64encode(authority.sign(canonical_json(body))).decode()}


def open_signed(doc: Any, authority_key: str, where: str = "roster") -> Roster:
    """The roster in `doc` if the pinned authority key signed it; IntegrityError naming why not."""
    try:
        body, signature = doc["body"], base64.b64decode(doc["signature"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{where} is not a signed roster (needs 'body' and a base64 'signature')") from None
    if not ed25519_valid(authority_key, canonical_json(body), signature):
        raise IntegrityError(f"{where}: signature does not verify against the pinned federation authority key "
                             f"({fingerprint_of(authority_key)}): refused")
    roster = Roster.from_body(body)
    try:
        expired = dt.datetime.fromisoformat(roster.valid_until) < dt.datetime.now(dt.UTC)
    except ValueError:
        raise IntegrityError(f"{where}: roster version {roster.version} has no valid_until: refused") from None
    if expired:
        raise IntegrityError(f"{where}: roster version {roster.version} expired on {roster.valid_until}; the "
                             f"authority must sign a fresh one (`primia federation sign`): refused")
    return roster


# ------------------------------------------------------------------ the authority's key (kept offline)
def init_authority(path: Path) -> str:
    """Create the authority key file (0600); returns its public key. Refuses to overwrite one."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already holds a federation authority key")
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    write_private_json(path, {"kind": "primia-authority-v1", "private": base64.b64encode(raw).decode(),
                          "public": authority_public(key)})
    return authority_public(key)


def load_authority(path: Path) -> Ed25519PrivateKey:
    doc = read_private_json(Path(path), "federation authority key")
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(doc["private"], validate=True))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: not a federation authority key file") from None


# ------------------------------------------------------------------ a hospital's pin
@dataclass
class Pin:
    """What a hospital remembers: the authority key it enrolled with and the newest roster version it saw.

    A roster signed by another key, or older than one already seen (a coordinator replaying the roster
    from before a revocation), is refused."""

    path: Path

    def enrol(self, authority_key: str) -> None:
        current = self._read()
        if current and current.get("authority_key") != authority_key:
            pinned = fingerprint_of(current["authority_key"])
            raise ConfigError(f"{self.path} pins another federation authority ({pinned}); move it away to enrol "
                              f"with {fingerprint_of(authority_key)}")
        if not current:
            write_private_json(self.path, {"authority_key": authority_key, "version": 0})

    @property
    def authority_key(self) -> str:
        current = self._read()
        if not current:
            raise ConfigError(f"no federation authority is pinned at {self.path}: enrol with `primia hospital enrol "
                              f"--authority-key KEY`")
        return str(current["authority_key"])

    def accept(self, doc: Any, where: str = "roster") -> Roster:
        """Open a roster against the pinned key and record its version; refuse one older than seen."""
        roster = open_signed(doc, self.authority_key, where)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self._read()
            seen = int(current.get("version", 0))
            if current.get("name", roster.name) != roster.name:
                raise IntegrityError(f"{where} is the roster of federation {roster.name!r}; this party enrolled in "
                                     f"{current['name']!r}: refused")
            if roster.version < seen:
                raise IntegrityError(f"{where} is version {roster.version}, older than version {seen} this hospital "
                                     f"already saw (a replayed roster, e.g. from before a revocation): refused")
            if roster.version > seen or "name" not in current:
                write_private_json(self.path, {**current, "version": max(seen, roster.version), "name": roster.name})
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return roster

    def _read(self) -> dict[str, Any]:
        return read_private_json(self.path, "roster pin") if self.path.exists() else {}
