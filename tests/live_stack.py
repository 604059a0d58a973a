"""The live stack for the tests that need real servers: SeaweedFS S3, a Prefect server and an MLflow server
on free 127.0.0.1 ports, started once per test session under a temporary PRIMIA_HOME and stopped by PID
(registered for every test folder by tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import stack
from primia import runtime
from primia.data.synthetic import make_synthetic, write_image_folder


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.StackState]:
    home = tmp_path_factory.mktemp("primia-home")
    logins = ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    old = {k: os.environ.get(k) for k in ("PRIMIA_HOME", "PREFECT_API_URL", "PREFECT_HOME",
                                          "PRIMIA_PROMOTION__AFTER_TRAINING", "PRIMIA_AUDIT__AFTER_ROUND", *logins)}
    state = stack.up(home)
    creds = stack.credentials(home)
    os.environ.update(PRIMIA_HOME=str(home), PREFECT_API_URL=state.urls["prefect_api"],
                      PREFECT_HOME=str(home / "prefect-client"), PREFECT_API_AUTH_STRING=creds["prefect_auth"],
                      MLFLOW_TRACKING_USERNAME=creds["mlflow_username"],
                      MLFLOW_TRACKING_PASSWORD=creds["mlflow_password"],
                      # training registers its challenger; promotion and audits run only where a test asks for them
                      PRIMIA_PROMOTION__AFTER_TRAINING="off", PRIMIA_AUDIT__AFTER_ROUND="off")
    runtime.reset()
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, PREFECT_HOME, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: state.urls["prefect_api"],
                                         PREFECT_HOME: str(home / "prefect-client"),
                                         PREFECT_API_AUTH_STRING: creds["prefect_auth"]}):
            yield state
    finally:
        _flush_prefect()
        stack.down(home)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        runtime.reset()


def _flush_prefect() -> None:
    """Send Prefect's queued logs and events while the server is still up (else exit hangs retrying)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # best effort at teardown
            pass


@pytest.fixture(scope="session")
def federation_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospitals")
    for k, site in enumerate(["h1", "h2", "h3", "test"]):
        write_image_folder(make_synthetic(48, 2, 32, seed=10 + k, noise=0.1), root / site)
    return root
