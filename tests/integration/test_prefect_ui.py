"""A browser opens the Prefect UI of a finished federated run and finds the round table.

Headless Chromium (Debian's `chromium`, installed here when missing) renders the single-page app;
`--dump-dom` returns the DOM after its scripts ran.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra import stack
from primia.config import parse_federation_config
from tests.integration.conftest import federation_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--window-size=1400,1000"]


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if cmd[1] == "install" and done.returncode == 0:
            break
    found = shutil.which("chromium")
    assert found, "could not install Debian's chromium for the browser test (apt-get install chromium)"
    return found


def _dom(browser: str, url: str, profile: Path) -> str:
    out = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    return out.stdout


def test_round_table_in_the_prefect_ui(live_stack: stack.StackState, federation_dirs: Path,
                                       tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.federated_training import federated_training

    browser = _chromium()
    federated_training(parse_federation_config(federation_raw(federation_dirs, "it-ui", rounds=1)))
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["it-ui-rounds"])))
    assert arts and arts[0].flow_run_id is not None
    ui = live_stack.urls["prefect_ui"]
    run_page = _dom(browser, f"{ui}/runs/flow-run/{arts[0].flow_run_id}", tmp_path / "profile")
    assert "it-ui" in run_page and "Completed" in run_page and "federated-training" in run_page
    table_page = _dom(browser, f"{ui}/artifacts/artifact/{arts[0].id}", tmp_path / "profile")
    for text in ("hospital", "samples", "train_loss", "local_s", "h1", "h2", "h3", "round 1: test MCC"):
        assert text in table_page, f"{text!r} not on the rendered round-table page"
