"""The local stack: SeaweedFS S3, PostgreSQL, a Prefect server and an MLflow server on 127.0.0.1.

PostgreSQL (infra/postgres.py) holds Prefect's and MLflow's databases, as in production; `--sqlite`
keeps them in SQLite files instead (no PostgreSQL process), the fallback and the bench baseline.

State lives under `<home>/stack/`: `state.json` (PIDs, ports, URLs; no secrets), the coordinator's
`credentials.json` (its S3 identity and its Prefect and MLflow logins), `admin.json` (the S3 admin, for
the operator only), the S3 identities (one per party, see infra/identities.py), all generated once and
mode 0600, one folder of data and a log per service. Prefect's API and MLflow ask for credentials.
Processes are detached (they outlive the CLI) and stopped by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra import identities, postgres
from infra.processes import alive, free_ports, http_ok, spawn, stop, wait_until
from primia.config import S3Settings, StoreSettings
from primia.errors import StackError
from primia.private_files import write_private_json
from primia.store.keys import init_key_file

SERVICES = ("s3", "postgres", "prefect", "mlflow")
DATABASES = ("postgresql", "sqlite")
CHECKPOINT_BUCKET = "primia-checkpoints"
MLFLOW_BUCKET = "primia-mlflow"
WEED_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
              "admin", "admin_grpc")


@dataclass
class StackState:
    home: str
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    database: str = "postgresql"

    def services(self) -> tuple[str, ...]:
        return tuple(s for s in SERVICES if s != "postgres" or self.database == "postgresql")


def stack_dir(home: Path) -> Path:
    return Path(home).resolve() / "stack"


def bin_path(name: str) -> str:
    """A console script of this environment (weed, prefect, mlflow), next to the interpreter."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise StackError(f"cannot find the '{name}' program: run `make venv` first")
    return found


def credentials(home: Path) -> dict[str, str]:
    """The coordinator's credentials on this stack (S3 identity, Prefect and MLflow logins), made on
    first use and kept 0600. The S3 admin identity is apart (`admin_credentials`): no service uses it."""
    path = stack_dir(home) / "credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    s3 = _identities(home).bootstrap(CHECKPOINT_BUCKET, MLFLOW_BUCKET)
    creds = {**s3[identities.COORDINATOR].as_dict(),
             "prefect_auth": f"primia:{secrets.token_urlsafe(24)}",
             "mlflow_username": "primia", "mlflow_password": secrets.token_urlsafe(24)}
    write_private_json(path, creds)
    write_private_json(stack_dir(home) / "admin.json", s3[identities.ADMIN].as_dict())
    write_private_json(stack_dir(home) / "mlflow-service.json",
                             {**s3[identities.MLFLOW].as_dict(), "flask_secret": secrets.token_urlsafe(32)})
    return creds


def admin_credentials(home: Path) -> dict[str, str]:
    credentials(home)
    return dict(json.loads((stack_dir(home) / "admin.json").read_text()))


def admin_settings(home: Path) -> S3Settings:
    """S3 settings with the stack operator's admin identity (buckets, policies, audits)."""
    from pydantic import SecretStr

    state, creds = load_state(home), admin_credentials(home)
    if state is None:
        raise StackError("the local stack is not running")
    return S3Settings(endpoint=f"127.0.0.1:{state.ports['s3']}", access_key=SecretStr(creds["access_key"]),
                      secret_key=SecretStr(creds["secret_key"]))


def _identities(home: Path) -> identities.Identities:
    return identities.Identities(stack_dir(home) / "identities.json")


def provision_hospital(home: Path, hospital: str, bucket: str) -> dict[str, str]:
    """The hospital's storage on this stack: its bucket (versioned, no deletes for it) and its own S3
    identity (read the coordinator's bucket, write only its own); returns its credentials."""
    from primia.store.s3 import ObjectStore

    state = load_state(home)
    if state is None:
        raise StackError("the local stack is not running: start it with `primia stack up`")
    admin = ObjectStore(admin_settings(home), bucket)
    admin.ensure_bucket(versioning=True)
    admin.set_policy(identities.deny_deletes_policy(bucket, f"hospital-{hospital}"))
    creds = _identities(home).add_hospital(hospital, bucket, CHECKPOINT_BUCKET)
    identities.reload(state.pids["s3"])
    _wait_for_identity(state, creds, bucket)
    return creds.as_dict()


def hospital_access_key(home: Path, hospital: str) -> str | None:
    """The S3 access key this stack knows for the hospital (None when it has none, or it was revoked)."""
    party = _identities(home).load().get(f"hospital-{hospital}")
    return str(party["access_key"]) if party and party.get("actions") else None


def revoke_hospital_storage(home: Path, hospital: str) -> None:
    state = load_state(home)
    _identities(home).revoke_hospital(hospital)
    if state is not None:
        identities.reload(state.pids["s3"])


def _wait_for_identity(state: StackState, creds: identities.Credentials, bucket: str) -> None:
    """The server applies a reload within a moment; wait until the new identity is accepted."""
    from pydantic import SecretStr

    from primia.store.s3 import ObjectStore

    settings = S3Settings(endpoint=f"127.0.0.1:{state.ports['s3']}", access_key=SecretStr(creds.access_key),
                          secret_key=SecretStr(creds.secret_key))
    probe = ObjectStore(settings, bucket, store=StoreSettings(retry_seconds=0))

    def accepted() -> bool:
        try:
            list(probe.list("probe/"))
            return True
        except Exception:  # noqa: BLE001  # not yet reloaded
            return False

    if not wait_until(accepted, 10, 0.1):
        raise StackError(f"the S3 server did not accept the new identity for {bucket} within 10 s")


def load_state(home: Path) -> StackState | None:
    path = stack_dir(home) / "state.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw.setdefault("database", "sqlite")  # a stack started before PostgreSQL was one
    return StackState(**raw)


def _save_state(state: StackState) -> None:
    path = stack_dir(Path(state.home)) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def _start_s3(root: Path, ports: dict[str, int], admin: dict[str, str]) -> int:
    data = root / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    (data / "mini.options").unlink(missing_ok=True)  # weed re-reads old flags (ports) from here
    p = ports
    cmd = [
        bin_path("weed"), f"-logdir={data}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}", f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
        f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
        f"-s3.config={root / 's3-identities.json'}",
    ]
    # Go's soft memory limit: at 300 MiB the server garbage-collected through every upload (ten
    # parallel 47 MB puts took 4.1-4.3 s, one 0.48 s); at 1 GiB 2.5-2.7 s and 0.27 s, resident 0.93 GB.
    env = {"GOMEMLIMIT": os.environ.get("PRIMIA_WEED_GOMEMLIMIT", "1GiB"), "AWS_ACCESS_KEY_ID": admin["access_key"],
           "AWS_SECRET_ACCESS_KEY": admin["secret_key"]}
    return spawn(cmd, env, root / "logs" / "s3.log", data)


def _start_prefect(root: Path, port: int, auth: str, db_port: int | None) -> int:
    home = root / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    db = (postgres.sqlalchemy_url(root, db_port, "prefect", driver="asyncpg") if db_port
          else f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    env = {
        "PREFECT_SERVER_API_AUTH_STRING": auth,  # every API call but /api/health needs it (401 otherwise)
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": db,  # environment only: the URL holds the password
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    cmd = [bin_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return spawn(cmd, env, root / "logs" / "prefect.log", home)


def _start_mlflow(root: Path, port: int, s3_port: int, creds: dict[str, str], db_port: int | None) -> int:
    """MLflow with its basic-auth app: the coordinator's login only (hospitals need no MLflow access);
    its own S3 identity, scoped to the artifact bucket."""
    home = root / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    service = json.loads((root / "mlflow-service.json").read_text())
    store = postgres.sqlalchemy_url(root, db_port, "mlflow") if db_port else f"sqlite:///{home / 'mlflow.db'}"
    auth_db = postgres.sqlalchemy_url(root, db_port, "mlflow_auth") if db_port else f"sqlite:///{home / 'auth.db'}"
    auth_ini = root / "mlflow-auth.ini"
    fd = os.open(auth_ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                 f"database_uri = {auth_db}\n"
                 f"admin_username = {creds['mlflow_username']}\nadmin_password = {creds['mlflow_password']}\n"
                 "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                 "auth_cache_ttl_seconds = 60\n")  # without the cache every request pays ~0.4 s of PBKDF2
    env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": service["access_key"],
        "AWS_SECRET_ACCESS_KEY": service["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_BACKEND_STORE_URI": store,  # environment, not argv: `ps` would show the password
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": service["flask_secret"],
        "TMPDIR": str(home / "tmp"),
    }
    (home / "tmp").mkdir(exist_ok=True)
    cmd = [bin_path("mlflow"), "server", "--app-name", "basic-auth", "--artifacts-destination",
           f"s3://{MLFLOW_BUCKET}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return spawn(cmd, env, root / "logs" / "mlflow.log", home)


def _ensure_buckets(s3_port: int, creds: dict[str, str]) -> None:
    from pydantic import SecretStr

    from primia.config import S3Settings
    from primia.store.s3 import ObjectStore

    settings = S3Settings(endpoint=f"127.0.0.1:{s3_port}", access_key=SecretStr(creds["access_key"]),
                          secret_key=SecretStr(creds["secret_key"]))
    for bucket in (CHECKPOINT_BUCKET, MLFLOW_BUCKET):
        ObjectStore(settings, bucket).ensure_bucket()


def _running(state: StackState, name: str) -> bool:
    pid = state.pids.get(name)
    return pid is not None and pid > 0 and alive(pid)  # alive(-1) would ask about every process


def _healthy(state: StackState, name: str) -> bool:
    if name == "s3":
        return http_ok(state.urls["s3"])
    if name == "prefect":
        return http_ok(state.urls["prefect_api"] + "/health")
    if name == "postgres":
        return postgres.ready(state.ports["postgres"])
    return http_ok(state.urls["mlflow"] + "/health")


def _wait_healthy(state: StackState, name: str, timeout: float) -> None:
    root = stack_dir(Path(state.home))
    pid = state.pids[name]
    ok = wait_until(lambda: _healthy(state, name) or not alive(pid), timeout, 0.2) and alive(pid)
    if not ok:
        tail = (root / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-5:]
        raise StackError(f"{name} did not become healthy within {timeout:.0f} s; log {root}/logs/{name}.log ends: "
                         + " | ".join(tail))


def up(home: Path, timeout: float = 90.0, database: str | None = None) -> StackState:
    """Start whatever is not already running; idempotent. `database` is where Prefect and MLflow keep
    their state: "postgresql" (a local PostgreSQL server, as in production) or "sqlite" (files); None
    keeps a running stack's choice, else PostgreSQL where it can run here. Switching restarts the stack
    on the other one."""
    current = load_state(home)
    database = database or (current.database if current else _default_database())
    if database not in DATABASES:
        raise StackError(f"database must be one of {', '.join(DATABASES)}, not {database!r}")
    if (current and current.database == database
            and all(_running(current, s) and _healthy(current, s) for s in current.services())):
        return current
    if current:
        down(home)
    root = stack_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    creds, admin = credentials(home), admin_credentials(home)
    init_key_file(Path(home).resolve() / "keys" / "keyring.json")  # local development keys, 0600
    names = (*WEED_PORTS, "prefect", "mlflow", "postgres")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    state = StackState(
        home=str(Path(home).resolve()), ports=ports, database=database,
        urls={"s3": f"http://127.0.0.1:{ports['s3']}", "prefect_api": f"http://127.0.0.1:{ports['prefect']}/api",
              "prefect_ui": f"http://127.0.0.1:{ports['prefect']}", "mlflow": f"http://127.0.0.1:{ports['mlflow']}"},
        buckets={"checkpoints": CHECKPOINT_BUCKET, "mlflow_artifacts": MLFLOW_BUCKET},
    )
    try:
        state.pids["s3"] = _start_s3(root, ports, admin)
        _save_state(state)
        db_port = _start_database(state, root, timeout)  # while S3 warms up
        state.pids["prefect"] = _start_prefect(root, ports["prefect"], creds["prefect_auth"], db_port)
        _save_state(state)
        _wait_healthy(state, "s3", timeout)
        wait_until(lambda: _try_buckets(ports["s3"], admin), 30, 0.5)
        _ensure_buckets(ports["s3"], admin)
        state.pids["mlflow"] = _start_mlflow(root, ports["mlflow"], ports["s3"], creds, db_port)
        _save_state(state)
        _wait_healthy(state, "prefect", timeout)
        _wait_healthy(state, "mlflow", timeout)
        _init_authority(Path(home).resolve())
    except Exception:
        down(home)
        raise
    return state


def _default_database() -> str:
    """PostgreSQL where it can run; else SQLite, said on stderr (`--postgresql` insists, and fails)."""
    why = postgres.available()
    if why:
        print(f"primia: PostgreSQL cannot run here ({why}); the stack uses SQLite", file=sys.stderr)
        return "sqlite"
    return "postgresql"


def _start_database(state: StackState, root: Path, timeout: float) -> int | None:
    """PostgreSQL with Prefect's and MLflow's databases; None for the SQLite fallback."""
    if state.database != "postgresql":
        return None
    state.pids["postgres"] = postgres.start(root, state.ports["postgres"])
    _save_state(state)
    _wait_healthy(state, "postgres", timeout)
    postgres.ensure_databases(root, state.ports["postgres"])
    return state.ports["postgres"]


def _init_authority(home: Path) -> None:
    """On a development stack one operator plays the federation authority too: its key and an empty
    roster draft under <home>/authority, and this machine's coordinator pins it."""
    from primia.config import CryptoSettings
    from primia.federation.roster import Pin
    from primia.federation.trust import AuthorityFolder
    from primia.store.keys import load_keyring

    folder = AuthorityFolder(home / "authority")
    if not folder.exists():
        ring = load_keyring(CryptoSettings(), home)
        folder.init("primia", ring.public_key_b64(), CHECKPOINT_BUCKET)
    Pin(home / "coordinator" / "roster-pin.json").enrol(folder.public_key())


def _try_buckets(s3_port: int, creds: dict[str, str]) -> bool:
    try:
        _ensure_buckets(s3_port, creds)
        return True
    except Exception:  # the S3 gateway answers HTTP a moment before its filer is ready
        return False


def kill_s3(home: Path) -> None:
    """SIGKILL the S3 server (fault injection): no clean shutdown, connections drop mid-request."""
    state = load_state(home)
    if state is None:
        raise StackError("the local stack is not running")
    try:
        os.killpg(state.pids["s3"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_until(lambda: not alive(state.pids["s3"]), 10, 0.05)


def start_s3(home: Path, timeout: float = 60.0) -> None:
    """Start the S3 server again on the same ports and data (after `kill_s3`)."""
    state = load_state(home)
    if state is None:
        raise StackError("the local stack is not running")
    state.pids["s3"] = _start_s3(stack_dir(home), state.ports, admin_credentials(home))
    _save_state(state)
    _wait_healthy(state, "s3", timeout)


def down(home: Path) -> list[str]:
    """Stop the stack's processes (MLflow, Prefect, then their database and S3); returns what was stopped."""
    state = load_state(home)
    if state is None:
        return []
    stopped = []
    for name in ("mlflow", "prefect", "postgres", "s3"):
        pid = state.pids.get(name)
        if pid and alive(pid):
            stop(pid)
            stopped.append(name)
    (stack_dir(home) / "state.json").unlink(missing_ok=True)
    return stopped


def status(home: Path) -> dict[str, dict[str, object]]:
    state = load_state(home)
    if state is None:
        return {}
    out: dict[str, dict[str, object]] = {}
    for name in state.services():
        pid = state.pids.get(name, 0)
        url = {"s3": state.urls["s3"], "prefect": state.urls["prefect_ui"], "mlflow": state.urls["mlflow"],
               "postgres": f"postgresql://127.0.0.1:{state.ports.get('postgres')}"}[name]
        running = _running(state, name)
        out[name] = {"pid": pid, "running": running, "healthy": running and _healthy(state, name), "url": url}
    return out
