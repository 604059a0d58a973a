"""`primia hospital`: a hospital's identity and its place on the federation's signed roster."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from primia.cli_common import connect, console, friendly
from primia.errors import ConfigError

hospital_app = typer.Typer(help="Hospital identities and their place on the signed roster.", no_args_is_help=True)


def _keys_dir(name: str, keys_dir: Path | None) -> Path:
    from primia.config import load_settings

    return keys_dir or load_settings().home / "hospitals" / name


def _passphrase(passphrase_env: str | None) -> str | None:
    if not passphrase_env:
        return None
    passphrase = os.environ.get(passphrase_env)
    if not passphrase:
        raise ConfigError(f"--passphrase-env {passphrase_env}: that environment variable is empty or unset")
    return passphrase


@hospital_app.command("register")
@friendly
def register_cmd(
    name: str = typer.Argument(..., help="Hospital name: lower-case letters, digits, dashes."),
    keys_dir: Path = typer.Option(None, help="Where the hospital keeps its private keys "
                                             "(default PRIMIA_HOME/hospitals/NAME)."),
    passphrase_env: str = typer.Option(None, help="Encrypt the private keys with the passphrase in this "
                                                  "environment variable."),
    authority_key: str = typer.Option(None, help="The federation authority's public key to pin. Without it, on a "
                                                 "development stack (authority under PRIMIA_HOME/authority), every "
                                                 "step of enrolment is done here."),
) -> None:
    """Create the hospital's identity (Ed25519 + X25519, private halves 0600 at the hospital) and its
    public half `public.json` for the authority. With --authority-key, pin it and stop there (the
    authority adds the hospital with `primia federation add`); without, enrol on this stack: pin, roster
    entry, signed new version, published, and the hospital's own bucket and S3 identity."""
    folder, passphrase = _keys_dir(name, keys_dir), _passphrase(passphrase_env)
    if authority_key:
        from infra.enrol import PIN_FILE, hospital_identity
        from primia.federation.roster import Pin, fingerprint_of

        public = hospital_identity(name, folder, passphrase)
        Pin(folder / PIN_FILE).enrol(authority_key)
        console.print(f"{name}: fingerprint {public.fingerprint}; pinned authority {fingerprint_of(authority_key)}; "
                      f"give {folder / 'public.json'} to the federation authority", highlight=False, soft_wrap=True)
        return
    connect()
    from infra.enrol import enrol

    entry = enrol(name, folder, passphrase)
    console.print(f"registered {name}: fingerprint {entry.fingerprint}, work pool {entry.pool}, bucket {entry.bucket} "
                  f"(its own S3 identity); private keys in {folder}", highlight=False, soft_wrap=True)


@hospital_app.command("list")
@friendly
def list_cmd() -> None:
    """The hospitals of the signed roster (verified against the pinned authority key)."""
    from primia.cli_federation import show_cmd

    show_cmd()


@hospital_app.command("revoke")
@friendly
def revoke_cmd(name: str = typer.Argument(..., help="Hospital to remove from future rounds.")) -> None:
    """On a development stack: a new signed roster version with the hospital revoked (it takes part in no
    later round and is refused in one under way), and its S3 identity switched off."""
    connect()
    from infra.enrol import revoke

    roster = revoke(name)
    console.print(f"revoked {name}: roster version {roster.version}")
