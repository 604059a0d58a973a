"""What every `primia` sub-command shares: the consoles and the one-line error wrapper."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from primia.errors import PrimiaError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn PrimiaError into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrimiaError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]




def home() -> Any:
    """PRIMIA_HOME, as the settings say (a Path)."""
    from primia.config import load_settings

    return load_settings().home


def connect() -> Any:
    """Point Prefect at the stack's server (before Prefect is imported) and return the settings."""
    from infra.processes import http_ok
    from primia.config import load_settings
    from primia.errors import StackError

    settings = load_settings()
    if not settings.prefect.api_url or not settings.mlflow.tracking_uri:
        raise StackError("the local stack is not running: start it with `primia stack up` (or `make up`)")
    for name, url in (("Prefect", settings.prefect.api_url + "/health"), ("MLflow", settings.mlflow.tracking_uri)):
        if not http_ok(url):
            raise StackError(f"{name} at {url} does not answer: start the stack with `primia stack up`")
    os.environ["PREFECT_API_URL"] = settings.prefect.api_url
    export_logins(settings)
    os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect-client").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's logs go to the server (the UI shows them); the console keeps our progress bars and
    # one-line errors instead of task tracebacks.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines would break the bars
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # in case MLflow was imported already
    return settings


def export_logins(settings: Any) -> None:
    """Prefect's and MLflow's clients read their credentials from the environment."""
    if settings.prefect.auth_string is not None:
        os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect.auth_string.get_secret_value()
    if settings.mlflow.username is not None and settings.mlflow.password is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username.get_secret_value()
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
