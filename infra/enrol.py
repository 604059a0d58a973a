"""Enrolment on a development stack, where one operator plays every role: the hospital makes its keys
and pins the authority, the authority puts it on the roster and signs a new version, the coordinator
publishes it, and the S3 operator gives the hospital its bucket and its own identity.

In production these are four people on four machines (see the README, "Deploying a hospital agent");
the steps and the files are the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra import stack
from primia.errors import ConfigError
from primia.federation import trust
from primia.federation.identity import PublicIdentity, create_identity, load_identity, write_public
from primia.federation.roster import ACTIVE, ROSTER_KEY, HospitalEntry, Pin, Roster
from primia.private_files import write_private_json

S3_FILE, KEYRING_FILE, PIN_FILE = "s3.json", "keyring.json", "roster-pin.json"


def hospital_identity(hospital: str, keys_dir: Path, passphrase: str | None = None) -> PublicIdentity:
    """The hospital's own step: its keys (kept here), and the public half for the authority."""
    public = load_identity(keys_dir, passphrase).public if (keys_dir / "identity.json").exists() else \
        create_identity(hospital, keys_dir, passphrase)
    if public.hospital != hospital:
        raise ConfigError(f"{keys_dir}/identity.json belongs to hospital {public.hospital!r}, not {hospital!r}")
    write_public(public, keys_dir)
    return public


def enrol(hospital: str, keys_dir: Path, passphrase: str | None = None) -> HospitalEntry:
    """Every step at once on this stack; a hospital already active with the same keys is left as it is."""
    from primia import runtime

    home = Path(runtime.settings().home)
    public = hospital_identity(hospital, keys_dir, passphrase)
    authority = trust.AuthorityFolder(runtime.settings().federation.authority_dir or home / "authority")
    if not authority.exists():
        raise ConfigError(f"no federation authority at {authority.path}: run `primia federation init` (the stack "
                          f"does so on `primia stack up`)")
    Pin(keys_dir / PIN_FILE).enrol(authority.public_key())
    draft = authority.draft()
    current = draft.hospitals.get(hospital)
    if current is not None and current.status == ACTIVE and current.fingerprint != public.fingerprint:
        raise ConfigError(f"hospital {hospital!r} is already registered (fingerprint {current.fingerprint}): revoke "
                          f"it first to register new keys")
    if current is None or current.status != ACTIVE:
        draft = authority.add(public)
    entry = draft.hospitals[hospital]
    _provision(home, hospital, entry.bucket, keys_dir)
    # a stack re-created under a kept authority folder has no roster in its store yet
    if current is None or current.status != ACTIVE or authority.signed_version() == 0 \
            or not runtime.object_store().exists(ROSTER_KEY):
        publish(authority.sign())
    return entry


def revoke(hospital: str) -> Roster:
    """Off the roster (a new signed version) and out of the object store."""
    from primia import runtime

    home = Path(runtime.settings().home)
    authority = trust.AuthorityFolder(runtime.settings().federation.authority_dir or home / "authority")
    authority.revoke(hospital)
    roster = publish(authority.sign())
    stack.revoke_hospital_storage(home, hospital)
    return roster


def publish(doc: dict[str, object]) -> Roster:
    from primia import runtime
    from tasks.registry import publish_view

    roster = runtime.roster_pin().accept(doc, "the roster to publish")
    trust.publish(runtime.object_store(), doc)
    publish_view(roster)
    return roster


def _provision(home: Path, hospital: str, bucket: str, keys_dir: Path) -> None:
    """The operator hands the hospital its S3 identity and the federation's data key (no signing key)."""
    kept = json.loads((keys_dir / S3_FILE).read_text()) if (keys_dir / S3_FILE).exists() else {}
    known = stack.hospital_access_key(home, hospital)
    if known is None or kept.get("access_key") != known:  # none yet, or from an older stack
        write_private_json(keys_dir / S3_FILE, stack.provision_hospital(home, hospital, bucket))
    from primia import runtime
    from primia.store.keys import export_hospital_key_file, key_file_path

    export_hospital_key_file(key_file_path(runtime.settings().crypto, home), keys_dir / KEYRING_FILE)


def agent_environment(keys_dir: Path) -> dict[str, str]:
    """What an agent started from this machine needs in its environment: its own S3 identity and key file."""
    env = {"PRIMIA_CRYPTO__KEY_FILE": str(keys_dir / KEYRING_FILE)}
    s3 = keys_dir / S3_FILE
    if s3.exists():
        creds = json.loads(s3.read_text())
        env |= {"PRIMIA_S3__ACCESS_KEY": creds["access_key"], "PRIMIA_S3__SECRET_KEY": creds["secret_key"]}
    return env
