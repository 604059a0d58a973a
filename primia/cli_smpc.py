"""`primia infer` and `primia smpc`: inference on a registered model, in the clear or encrypted."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from primia.cli_common import console, friendly, home

smpc_app = typer.Typer(
    help="Encrypted inference's services: the model owner (serves a registered model without revealing a weight) "
         "and the dealer (hands out correlated randomness, sees neither weights nor images). Each proves a key "
         "the federation's signed roster lists under its role.", no_args_is_help=True)

TIMEOUT = typer.Option(120.0, "--timeout", min=1.0, help="Seconds a silent party is waited for before the session "
                                                         "ends with an error.")


def _home() -> Path:
    return Path(home())


# ------------------------------------------------------------------ primia smpc keygen / serve
@smpc_app.command("keygen")
@friendly
def keygen_cmd(
    name: str = typer.Argument(..., help="The service's name on the roster (lower-case letters, digits, dashes)."),
    authority_key: str = typer.Option(None, help="The federation authority's public key to pin (default: this "
                                                 "machine's authority, on a development stack)."),
) -> None:
    """Make a service's identity (PRIMIA_HOME/smpc/NAME, 0600) and pin the authority; then the authority runs
    `primia federation add-service NAME --role ROLE` and signs."""
    from primia.federation.identity import create_identity, write_public
    from primia.federation.roster import Pin
    from primia.federation.trust import AuthorityFolder

    folder = _home() / "smpc" / name
    key = authority_key or AuthorityFolder(_home() / "authority").public_key()
    public = create_identity(name, folder)
    Pin(folder / "roster-pin.json").enrol(key)
    path = write_public(public, folder)
    console.print(f"service {name}: signing key fingerprint {public.fingerprint}; public half {path}",
                  highlight=False, soft_wrap=True)


@smpc_app.command("serve")
@friendly
def serve_cmd(
    role: str = typer.Option(..., help="model-owner or dealer."),
    name: str = typer.Option(..., help="This service's roster name (its keys: PRIMIA_HOME/smpc/NAME)."),
    listen: str = typer.Option("127.0.0.1:7470", help="HOST:PORT to listen on."),
    model: str = typer.Option(None, help="model-owner: the registered model, e.g. models:/NAME@champion."),
    dealer: list[str] = typer.Option([], help="model-owner: NAME=HOST:PORT of a roster dealer it may use "
                                              "(repeatable)."),
    roster: Path = typer.Option(None, help="The signed roster file (default PRIMIA_HOME/authority/roster.json)."),
    max_sessions: int = typer.Option(2, min=1, help="Sessions computed at once (a 224x224 ResNet-18 session holds "
                                                    "gigabytes); more callers wait, then hear it is busy."),
    timeout: float = TIMEOUT,
) -> None:
    """Serve encrypted inference until interrupted: each caller proves its roster key first; each session's
    end (who, how long, or why it failed) is logged."""
    import logging

    from rich.logging import RichHandler

    from primia.errors import ConfigError
    from primia.federation.identity import load_identity
    from primia.smpc.caller import RosterWatch, endpoint
    from primia.smpc.link import Identity
    from primia.smpc.parties import DEALER, MODEL_OWNER
    from primia.smpc.service import dealer_server, model_owner_server, parse_address

    if role not in (MODEL_OWNER, DEALER):
        raise ConfigError(f"--role {role!r}: expected model-owner or dealer")
    folder = _home() / "smpc" / name
    me = Identity(name, load_identity(folder).signing)
    parties = RosterWatch(folder / "roster-pin.json", roster or _home() / "authority" / "roster.json")
    address = parse_address(listen, "--listen")
    logger = logging.getLogger("primia.smpc")
    logger.addHandler(RichHandler(console=console, show_path=False))
    logger.setLevel(logging.INFO)
    if role == DEALER:
        server = dealer_server(address, me, parties, timeout, max_sessions)
    else:
        if not model or not dealer:
            raise ConfigError("--role model-owner needs --model models:/NAME@ALIAS and at least one --dealer")
        from primia.config import load_settings
        from primia.smpc.champion import load_served

        if not load_settings().mlflow.tracking_uri:  # the registry only: no Prefect login on this machine
            raise ConfigError("the model owner loads its model from MLflow: set PRIMIA_MLFLOW__TRACKING_URI (and "
                              "its login)")
        served = load_served(model)
        server = model_owner_server(address, me, parties, served, dict(endpoint(d, "--dealer") for d in dealer),
                                    timeout, max_sessions)
        console.print(f"serving {served.card.source} ({served.card.model}, {served.card.image_size}px)")
    console.print(f"{role} {name} listening on {server.address[0]}:{server.address[1]} (Ctrl-C to stop)")
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()


# ------------------------------------------------------------------ primia infer
def infer_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, DICOM)."),
    model: str = typer.Option(..., help="The registered model: models:/NAME@champion or models:/NAME/VERSION."),
    encrypted: bool = typer.Option(False, "--encrypted", help="Neither the images nor the weights are revealed: "
                                   "secret-shared between a model owner and this data owner, with a dealer."),
    model_owner: str = typer.Option(None, help="--encrypted: NAME=HOST:PORT of a running model owner (default: "
                                               "start all three parties on this machine, with throwaway keys)."),
    dealer: str = typer.Option(None, help="--encrypted: NAME=HOST:PORT of a running dealer."),
    hospital: str = typer.Option(None, help="--encrypted with running services: the hospital this data owner is "
                                            "(its roster key)."),
    keys_dir: Path = typer.Option(None, help="That hospital's keys (default PRIMIA_HOME/hospitals/NAME)."),
    roster: Path = typer.Option(None, help="The signed roster file (default PRIMIA_HOME/authority/roster.json)."),
    batch: int = typer.Option(16, min=1, max=64, help="Images per encrypted session."),
    compare: bool = typer.Option(False, help="Also run the plain model here and report the agreement (needs the "
                                             "weights: a check for whoever holds both)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    timeout: float = TIMEOUT,
) -> None:
    """Classify images with a registered model: in the clear through its pyfunc, or --encrypted."""
    from primia.cli_common import connect
    from primia.errors import DataError

    missing = [str(p) for p in images if not p.is_file()]
    if missing:  # before any party is started or any server called
        raise DataError(f"images: no such file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    if not encrypted or compare or not model_owner:
        connect()  # MLflow: the plain model, or the local model owner's registry
    from primia.smpc import client

    if not encrypted:
        preds, source = client.plain(images, model)
        return _show({"model": source, "encrypted": False, "predictions": [asdict(p) for p in preds]}, as_json)
    with Progress(TextColumn("encrypted inference"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=as_json, transient=True) as bar:
        task = bar.add_task("", total=len(images))
        lock = threading.Lock()

        def advance(n: int, _: dict[str, Any]) -> None:
            with lock:
                bar.advance(task, n)

        preds, card, figures = _encrypted(images, model, model_owner, dealer, hospital, roster, batch, advance, timeout,
                                          keys_dir)
    result: dict[str, Any] = {"model": card.source, "encrypted": True, "predictions": [asdict(p) for p in preds],
                              "sessions": len(figures), "online_s": sum(f["online_s"] for f in figures),
                              "session_s": sum(f["session_s"] for f in figures)}
    if compare:
        result["comparison"] = client.compare(preds, client.plain(images, model)[0])
    _show(result, as_json)


def _encrypted(images: list[Path], model: str, model_owner: str | None, dealer: str | None, hospital: str | None,
               roster: Path | None, batch: int, advance: Any, timeout: float, keys_dir: Path | None) -> Any:
    from primia.smpc import client
    from primia.smpc.caller import seat, served_is

    with seat(_home(), model, model_owner or "", dealer or "", hospital or "", roster, timeout, keys_dir) as c:
        return client.encrypted(images, c.me, c.parties, c.where, batch, advance, timeout,
                                lambda card: served_is(card.source, model))


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    preds = result["predictions"]
    table = Table(title=f"{result['model']} ({'encrypted' if result['encrypted'] else 'in the clear'})")
    for col in ("image", "prediction", "probabilities"):
        table.add_column(col)
    for p in preds:
        table.add_row(p["image"], p["label"], " ".join(f"{v:.3f}" for v in p["probabilities"]))
    console.print(table)
    if result["encrypted"]:
        console.print(f"{result['sessions']} session(s), online {result['online_s']:.2f} s, with the dealer's "
                      f"material {result['session_s']:.2f} s")
    if "comparison" in result:
        c = result["comparison"]
        console.print(f"against the plain model: agreement {c['agreement']:.1%}, logit error max "
                      f"{c['max_logit_error']:.2g}, median {c['median_logit_error']:.2g}")
