"""`primia agent start`: run a hospital's agent (its Prefect worker) on the hospital's own data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from primia.cli_common import connect, console, friendly
from primia.errors import ConfigError, DataError

agent_app = typer.Typer(help="Run a hospital agent: a Prefect worker on pool hospital-NAME, on local data.",
                        no_args_is_help=True)


@agent_app.command("start")
@friendly
def start_cmd(
    hospital: str = typer.Option(..., "--hospital", help="The registered hospital this agent serves."),
    data: Path = typer.Option(None, help="The hospital's data (a folder or file); default "
                                         "PRIMIA_HOSPITAL__DATA__PATH. It never leaves this machine."),
    data_format: str = typer.Option("folder", "--format", help="folder, kermany, npz, dicom or nifti."),
    keys_dir: Path = typer.Option(None, help="Folder of the hospital's private keys "
                                             "(default PRIMIA_HOME/hospitals/NAME)."),
    passphrase_env: str = typer.Option(None, help="Environment variable holding the key passphrase."),
    poll_seconds: float = typer.Option(5.0, min=0.2, help="How often the worker asks the Prefect server for "
                                                          "work when no event woke it first (a run scheduled "
                                                          "on its pool wakes it at once; Prefect's default "
                                                          "is 10 s)."),
) -> None:
    """Check the identity against the registry, set up pool and deployment, warm up, run the worker.

    Runs in the foreground until stopped (Ctrl-C or SIGTERM)."""
    from infra.agent import COORDINATOR_ONLY
    for name in COORDINATOR_ONLY:  # a hospital holds only its own credentials
        os.environ.pop(name, None)
    env = _agent_env(hospital, data, data_format, keys_dir, passphrase_env, poll_seconds)
    os.environ.update(env)
    connect()
    from primia import runtime

    runtime.reset()
    entry = _check_registration(hospital, runtime.identity().public.fingerprint)
    from infra.agent import WarmLauncher, ensure_pool_and_deployment, run_worker

    ensure_pool_and_deployment(entry.pool, hospital)
    launcher = WarmLauncher(log=lambda line: console.print(f"[dim]{hospital}:[/] {line}", highlight=False))
    with console.status("warming up: importing the training stack once for all rounds..."):
        launcher.warm_up()
    launcher.serve_in_background()
    from primia.federation.liveness import Heartbeat

    heartbeat = Heartbeat(runtime.bucket_store(entry.bucket), hospital).start()  # the coordinator's sign of life
    worker_env = {**os.environ, "PRIMIA_HOSPITAL__LAUNCH_SOCKET": launcher.path,
                  "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}
    console.print(f"agent {hospital} ready: pool {entry.pool}, deployment local-training/{entry.pool} (pinned), "
                  f"polling every {poll_seconds:g} s", highlight=False)
    try:
        code = run_worker(entry.pool, hospital, worker_env, log=console.print, poll_seconds=poll_seconds)
    finally:
        heartbeat.stop()
        launcher.close()
    sys.exit(code)


def _agent_env(hospital: str, data: Path | None, data_format: str, keys_dir: Path | None,
               passphrase_env: str | None, poll_seconds: float) -> dict[str, str]:
    env = {"PRIMIA_MODE": "distributed", "PRIMIA_HOSPITAL__NAME": hospital,
           "PREFECT_WORKER_QUERY_SECONDS": f"{poll_seconds:g}"}
    path = data or (Path(os.environ["PRIMIA_HOSPITAL__DATA__PATH"]) if os.environ.get("PRIMIA_HOSPITAL__DATA__PATH")
                    else None)
    if path is None:
        raise ConfigError("--data: the hospital's data path is needed (or PRIMIA_HOSPITAL__DATA__PATH)")
    if not path.exists():
        raise DataError(f"--data {path}: does not exist")
    env["PRIMIA_HOSPITAL__DATA__PATH"] = str(path.resolve())
    env["PRIMIA_HOSPITAL__DATA__FORMAT"] = os.environ.get("PRIMIA_HOSPITAL__DATA__FORMAT", data_format) \
        if data is None else data_format
    from infra.enrol import agent_environment
    from primia.config import load_settings

    folder = keys_dir or load_settings().home / "hospitals" / hospital
    env["PRIMIA_HOSPITAL__KEYS_DIR"] = str(folder.resolve())
    env |= agent_environment(folder.resolve())  # its own S3 identity and key file (no signing key)
    if passphrase_env:
        secret = os.environ.get(passphrase_env)
        if not secret:
            raise ConfigError(f"--passphrase-env {passphrase_env}: that environment variable is empty or unset")
        env["PRIMIA_HOSPITAL__PASSPHRASE"] = secret
    return env


def _check_registration(hospital: str, fingerprint: str) -> Any:
    """Against the signed roster (checked with the authority key this hospital pinned), not the server."""
    from primia import runtime

    entry = runtime.roster().hospitals.get(hospital)
    if entry is None:
        raise ConfigError(f"--hospital {hospital}: not on the signed roster; run `primia hospital register {hospital}` "
                          f"first")
    if entry.status != "active":
        raise ConfigError(f"--hospital {hospital}: the signed roster says {entry.status}; it takes part in no round")
    if entry.fingerprint != fingerprint:
        raise ConfigError(f"--hospital {hospital}: local keys (fingerprint {fingerprint}) are not the registered "
                          f"ones ({entry.fingerprint})")
    return entry
