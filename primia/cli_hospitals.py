"""`primia hospital`: register, list and revoke hospital agents in the coordinator's registry."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from primia.cli_common import console, friendly
from primia.errors import ConfigError

hospital_app = typer.Typer(help="Register, list and revoke hospitals (registry on the Prefect server).",
                           no_args_is_help=True)


def _keys_dir(name: str, keys_dir: Path | None) -> Path:
    from primia.config import load_settings

    return keys_dir or load_settings().home / "hospitals" / name


@hospital_app.command("register")
@friendly
def register_cmd(
    name: str = typer.Argument(..., help="Hospital name: lower-case letters, digits, dashes."),
    keys_dir: Path = typer.Option(None, help="Where the hospital keeps its private keys "
                                             "(default PRIMIA_HOME/hospitals/NAME)."),
    passphrase_env: str = typer.Option(None, help="Encrypt the private keys with the passphrase in this "
                                                  "environment variable."),
) -> None:
    """Create the hospital's identity (Ed25519 + X25519, private halves 0600 at the hospital) and
    record the public halves and its work pool `hospital-NAME` in the registry."""
    from primia.cli import connect
    from primia.federation.identity import create_identity, load_identity

    connect()
    from tasks.registry import register

    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if not passphrase:
            raise ConfigError(f"--passphrase-env {passphrase_env}: that environment variable is empty or unset")
    folder = _keys_dir(name, keys_dir)
    public = (load_identity(folder, passphrase).public if (folder / "identity.json").exists()
              else create_identity(name, folder, passphrase))
    if public.hospital != name:
        raise ConfigError(f"{folder}/identity.json belongs to hospital {public.hospital!r}, not {name!r}")
    record = register(public)
    console.print(f"registered {name}: fingerprint {record.fingerprint}, work pool {record.work_pool}; "
                  f"private keys in {folder}")


@hospital_app.command("list")
@friendly
def list_cmd() -> None:
    """The registry: hospitals, status, key fingerprints and work pools."""
    from primia.cli import connect

    connect()
    from tasks.registry import list_hospitals

    table = Table(title="registered hospitals")
    for col in ("hospital", "status", "fingerprint", "work pool", "registered", "revoked"):
        table.add_column(col, overflow="fold")
    for r in list_hospitals():
        table.add_row(r.hospital, r.status, r.fingerprint, r.work_pool, r.registered_at, r.revoked_at)
    console.print(table)


@hospital_app.command("revoke")
@friendly
def revoke_cmd(name: str = typer.Argument(..., help="Hospital to remove from future rounds.")) -> None:
    """Mark a hospital revoked: it takes part in no future round; its record stays for audit."""
    from primia.cli import connect

    connect()
    from tasks.registry import revoke

    record = revoke(name)
    console.print(f"revoked {record.hospital} at {record.revoked_at}")
