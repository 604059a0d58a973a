"""`primia federation`: the federation authority's signed roster (init, add, revoke, sign, publish, show)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from primia.cli_common import connect, console, friendly

federation_app = typer.Typer(
    help="The federation authority and its signed roster: the trust root every hospital checks, which the "
         "coordinator cannot forge. The authority key stays offline (on a development stack: PRIMIA_HOME/authority).",
    no_args_is_help=True)


def _folder(authority_dir: Path | None):  # type: ignore[no-untyped-def]
    from primia.config import load_settings
    from primia.federation.trust import AuthorityFolder

    s = load_settings()
    return AuthorityFolder(authority_dir or s.federation.authority_dir or s.home / "authority")


DIR_OPTION = typer.Option(None, "--authority-dir", help="The authority's folder (default PRIMIA_HOME/authority).")


@federation_app.command("init")
@friendly
def init_cmd(
    name: str = typer.Option("primia", help="The federation's name, on every roster version."),
    coordinator_key: str = typer.Option(None, help="The coordinator's Ed25519 public key, base64 (default: this "
                                                   "machine's coordinator key, `primia keys show`)."),
    bucket: str = typer.Option(None, help="The coordinator's bucket (default PRIMIA_S3__BUCKET)."),
    authority_dir: Path = DIR_OPTION,
) -> None:
    """Create the federation authority key (0600) and an empty roster draft naming the coordinator."""
    from primia.config import load_settings
    from primia.store.keys import load_keyring

    s = load_settings()
    folder = _folder(authority_dir)
    key = coordinator_key or load_keyring(s.crypto, s.home).public_key_b64()
    public = folder.init(name, key, bucket or s.s3.bucket)
    from primia.federation.roster import Pin, fingerprint_of

    Pin(s.home / "coordinator" / "roster-pin.json").enrol(public)  # this machine's coordinator trusts it
    console.print(f"federation {name}: authority key {fingerprint_of(public)} in {folder.key_file}\n"
                  f"public key (give it to every hospital: `primia hospital register NAME --authority-key KEY`):\n"
                  f"{public}", highlight=False, soft_wrap=True)


@federation_app.command("add")
@friendly
def add_cmd(
    hospital: str = typer.Argument(..., help="The hospital to enrol."),
    identity: Path = typer.Option(None, help="The hospital's public identity file (`public.json` that "
                                             "`primia hospital register` wrote; default PRIMIA_HOME/hospitals/NAME)."),
    authority_dir: Path = DIR_OPTION,
) -> None:
    """Put a hospital's public keys and storage identity on the roster draft (then `sign`)."""
    from primia.federation.identity import read_public

    path = identity or _default_identity(hospital)
    public = read_public(path)
    if public.hospital != hospital:
        from primia.errors import ConfigError

        raise ConfigError(f"--identity {path} belongs to hospital {public.hospital!r}, not {hospital!r}")
    roster = _folder(authority_dir).add(public)
    entry = roster.hospitals[hospital]
    console.print(f"{hospital}: fingerprint {entry.fingerprint}, bucket {entry.bucket} on the draft; run "
                  f"`primia federation sign` to make it a roster version", highlight=False, soft_wrap=True)


@federation_app.command("add-service")
@friendly
def add_service_cmd(
    name: str = typer.Argument(..., help="The service's name (as `primia smpc keygen NAME` made it)."),
    role: str = typer.Option(..., help="model-owner or dealer (encrypted inference)."),
    identity: Path = typer.Option(None, help="The service's public identity file (default "
                                             "PRIMIA_HOME/smpc/NAME/public.json)."),
    authority_dir: Path = DIR_OPTION,
) -> None:
    """Put an encrypted-inference service's public key on the roster draft under its role (then `sign`)."""
    from primia.config import load_settings
    from primia.errors import ConfigError
    from primia.federation.identity import read_public

    path = identity or load_settings().home / "smpc" / name / "public.json"
    public = read_public(path)
    if public.hospital != name:
        raise ConfigError(f"--identity {path} belongs to {public.hospital!r}, not {name!r}")
    entry = _folder(authority_dir).add_service(public, role).services[name]
    console.print(f"{name}: {entry.role}, fingerprint {entry.fingerprint} on the draft; run `primia federation "
                  f"sign` to make it a roster version", highlight=False, soft_wrap=True)


def _default_identity(hospital: str) -> Path:
    from primia.config import load_settings

    return load_settings().home / "hospitals" / hospital / "public.json"


@federation_app.command("revoke")
@friendly
def revoke_cmd(hospital: str = typer.Argument(..., help="The hospital to take off."),
               authority_dir: Path = DIR_OPTION) -> None:
    """Mark a hospital revoked on the draft; the next signed version takes it out of every round."""
    _folder(authority_dir).revoke(hospital)
    console.print(f"{hospital} revoked on the draft; run `primia federation sign` to make it effective")


@federation_app.command("sign")
@friendly
def sign_cmd(
    publish: bool = typer.Option(True, help="Also publish it to the coordinator's bucket (a development stack, "
                                            "where one operator plays every role)."),
    valid_days: float = typer.Option(90, min=0.01, help="Days the version is valid: hospitals refuse it after, so a "
                                                        "coordinator cannot withhold a newer one (a revocation) "
                                                        "for longer."),
    authority_dir: Path = DIR_OPTION,
) -> None:
    """Sign the draft as the next roster version (roster.json in the authority's folder)."""
    doc = _folder(authority_dir).sign(valid_days)
    console.print(f"signed roster version {doc['body']['version']} ({len(doc['body']['hospitals'])} hospitals)")
    if publish:
        _publish(doc)


@federation_app.command("publish")
@friendly
def publish_cmd(file: Path = typer.Argument(None, help="A signed roster file (default: the authority folder's).")
                ) -> None:
    """Put a signed roster where every party reads it; hospitals accept it only if their pinned authority
    key signed it and it is not older than what they saw."""
    doc = json.loads(file.read_text()) if file else _folder(None).signed_doc()
    _publish(doc)


def _publish(doc: dict) -> None:  # type: ignore[type-arg]
    connect()
    from primia import runtime
    from primia.federation import trust
    from tasks.registry import publish_view

    roster = runtime.roster_pin().accept(doc, "the roster to publish")  # never publish what would be refused
    trust.publish(runtime.object_store(), doc)
    publish_view(roster)
    console.print(f"published roster version {roster.version} to s3://{runtime.object_store().bucket}/roster/"
                  f"roster.json (Prefect blocks show it, read-only)")


@federation_app.command("show")
@friendly
def show_cmd() -> None:
    """The published roster, verified against this machine's pinned authority key."""
    connect()
    from primia import runtime

    roster = runtime.roster()
    table = Table(title=f"federation {roster.name}: roster version {roster.version} ({roster.created}, valid until "
                        f"{roster.valid_until}), verified")
    for col in ("hospital", "status", "fingerprint", "bucket", "work pool"):
        table.add_column(col, overflow="fold")
    for h, e in sorted(roster.hospitals.items()):
        table.add_row(h, e.status, e.fingerprint, e.bucket, e.pool)
    for n, s in sorted(roster.services.items()):
        table.add_row(n, f"{s.status} ({s.role})", s.fingerprint, "-", "-")
    console.print(table)
    console.print(f"coordinator key {roster.coordinator_key} (bucket {roster.coordinator_bucket})", highlight=False,
                  soft_wrap=True)
