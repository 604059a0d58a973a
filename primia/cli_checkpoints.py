"""`primia checkpoints` and `primia keys`: inspect, verify, export and re-wrap encrypted checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from primia.cli_common import console, friendly
from primia.errors import IntegrityError, PrimiaError

checkpoints_app = typer.Typer(help="List, verify, export and re-wrap encrypted checkpoints.", no_args_is_help=True)
keys_app = typer.Typer(help="Master keys and the coordinator's signing key (secrets are never printed).",
                       no_args_is_help=True)


def _federations() -> list[str]:
    from primia import runtime

    names = {info.key.split("/")[1] for info in runtime.object_store().list("federations/")
             if info.key.count("/") >= 2}
    return sorted(names)


def _stores(federation: str | None):  # type: ignore[no-untyped-def]
    from primia import runtime

    names = [federation] if federation else _federations()
    return [runtime.checkpoints(n) for n in names]


@checkpoints_app.command("list")
@friendly
def list_cmd(federation: str = typer.Option(None, "--federation", "-f", help="One federation (default: all).")) -> None:
    """Committed rounds per federation, with their objects and size."""
    table = Table(title="committed checkpoints (a round is visible once its signed manifest is written)")
    for col in ("federation", "round", "objects", "MB", "created", "pinned"):
        table.add_column(col, justify="right" if col in ("round", "objects", "MB") else "left", overflow="fold")
    for store in _stores(federation):
        pins = store.pins()
        sizes = {i.key: i.size for i in store.store.list(store.prefix)}
        for r in store.committed_rounds():
            body = store.load_round(r).manifest
            mb = sum(sizes.get(o["key"], 0) for o in body["objects"].values()) / 1e6
            table.add_row(store.federation_id, str(r), str(len(body["objects"])), f"{mb:.2f}", body["created"],
                          "yes" if r in pins else "")
    console.print(table)


@checkpoints_app.command("verify")
@friendly
def verify_cmd(
    federation: str = typer.Option(None, "--federation", "-f", help="One federation (default: all)."),
    round_: int = typer.Option(None, "--round", "-r", help="One round (default: all committed)."),
) -> None:
    """Check signatures, hashes and authentication tags of committed rounds; exit 1 on any failure."""
    failures = 0
    for store in _stores(federation):
        for r in [round_] if round_ is not None else store.committed_rounds():
            try:
                names = store.verify_round(r)
                console.print(f"[green]ok[/]   {store.federation_id} round {r}: {len(names)} objects")
            except IntegrityError as exc:
                failures += 1
                console.print(f"[red]FAIL[/] {store.federation_id} round {r}: {exc}", soft_wrap=True)
    if failures:
        raise typer.Exit(1)


@checkpoints_app.command("export")
@friendly
def export_cmd(
    federation: str = typer.Option(..., "--federation", "-f"),
    round_: int = typer.Option(None, "--round", "-r", help="Round to export (default: latest committed)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write into."),
    decrypt: bool = typer.Option(False, "--decrypt", help="Write plaintext (safetensors/JSON) instead of ciphertext."),
) -> None:
    """Export a committed round: verified ciphertext plus manifest, or with --decrypt the plaintext."""
    import json

    store = _stores(federation)[0]
    rounds = store.committed_rounds()
    if not rounds:
        raise PrimiaError(f"federation {federation!r} has no committed rounds")
    r = rounds[-1] if round_ is None else round_
    if r not in rounds:
        raise PrimiaError(f"federation {federation!r} has no committed round {r} (committed: {rounds})")
    committed = store.load_round(r)
    for name in committed.manifest["objects"]:
        ref = committed.ref(name)
        target = out / f"round-{r:05d}" / (name if decrypt else name + ".enc")
        target.parent.mkdir(parents=True, exist_ok=True)
        if decrypt:
            target.write_bytes(store.get_object(ref))
        else:
            data, meta = store.store.get_with_metadata(ref.key)
            store.get_object(ref)  # verify before writing anything out
            target.write_bytes(data)
            target.with_suffix(target.suffix + ".header.json").write_text(json.dumps(meta, indent=1))
    (out / f"round-{r:05d}" / "manifest.json").write_text(json.dumps(committed.manifest, indent=1))
    console.print(f"exported {federation} round {r} ({'plaintext' if decrypt else 'ciphertext'}) to {out}")


@checkpoints_app.command("rewrap")
@friendly
def rewrap_cmd(
    federation: str = typer.Option(None, "--federation", "-f", help="One federation (default: all)."),
) -> None:
    """Re-wrap every encrypted object's data key under the current master key (payloads untouched) and
    delete the older versions, so that a retired master key decrypts nothing left in the bucket."""
    total = removed = 0
    for store in _stores(federation):
        changed, gone = store.rewrap_all()
        total, removed = total + changed, removed + gone
    kid = _stores(None)[0].ring.current_kek()[0] if _stores(None) else "?"
    console.print(f"re-wrapped {total} objects under master key {kid}; deleted {removed} older object versions"
                  if total or removed else "nothing to re-wrap: every object already uses the current master key")


def _key_path() -> Path:
    from primia.config import load_settings
    from primia.store.keys import key_file_path

    s = load_settings()
    return key_file_path(s.crypto, s.home)


@keys_app.command("init")
@friendly
def keys_init() -> None:
    """Create the key file (mode 0600) with a master key and a signing key, if it does not exist."""
    from primia.store.keys import init_key_file

    path = _key_path()
    console.print(f"created {path}" if init_key_file(path) else f"{path} exists; nothing changed")


@keys_app.command("rotate")
@friendly
def keys_rotate() -> None:
    """Add a new master key and make it current. Then run `primia checkpoints rewrap`."""
    from primia.store.keys import rotate_key_file

    console.print(f"new current master key: {rotate_key_file(_key_path())}")


@keys_app.command("export-hospital")
@friendly
def keys_export_hospital(
    out: Path = typer.Argument(..., help="Where to write the hospitals' key file (0600)."),
) -> None:
    """The key file a hospital agent gets: the master keys only, never the coordinator's signing key
    (hospitals check manifests with the coordinator's public key from the signed roster)."""
    from primia.store.keys import export_hospital_key_file

    export_hospital_key_file(_key_path(), out)
    console.print(f"wrote {out}: master keys only (no signing key)")


@keys_app.command("show")
@friendly
def keys_show() -> None:
    """Key ids, the current one and the signing public key; never a secret."""
    from primia.config import load_settings
    from primia.store.keys import load_keyring

    s = load_settings()
    ring = load_keyring(s.crypto, s.home)
    for kid in sorted(ring.keks):
        console.print(f"master key {kid}{'  (current)' if kid == ring.current else ''}")
    if ring.signing_private is not None:
        console.print(f"signing key {ring.signing_id}: public {ring.public_key_b64()}")
