"""A browser opens the Prefect UI of a finished federated run and finds the round table.

Headless Chromium (Debian's `chromium`, installed here when missing) renders the single-page app. The
server asks for credentials, so the browser is driven over the DevTools protocol: it logs in as the UI
does (the login kept in the page's local storage), then opens each page and returns its DOM once the
expected text is there. Without the login the UI shows its login page only (checked too).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra import stack
from primia.config import parse_federation_config
from tests.integration.conftest import federation_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--remote-allow-origins=*"]


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


class Browser:
    """One headless Chromium driven over the DevTools protocol (a websocket)."""

    def __init__(self, binary: str, profile: Path) -> None:
        from infra.processes import free_port

        port = free_port()
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, pages = time.monotonic() + 60, []
        while time.monotonic() < deadline and not pages:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
                    pages = [t for t in json.loads(resp.read()) if t["type"] == "page"]
            except OSError:
                time.sleep(0.3)
        assert pages, "chromium did not open its DevTools endpoint"
        from websockets.sync.client import connect

        self.ws, self.seq = connect(pages[0]["webSocketDebuggerUrl"], max_size=2**26), 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.seq:
                return dict(msg.get("result", {}))

    def js(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def page(self, url: str, expect: str, timeout_s: float = 60) -> str:
        """The rendered DOM of `url` once its text contains `expect` (or whatever it shows by the timeout)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.js("document.body ? document.body.innerText : ''") or ""
            if expect in text:
                break
            time.sleep(0.5)
        return str(self.js("document.documentElement.outerHTML"))

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


def test_round_table_in_the_prefect_ui(live_stack: stack.StackState, federation_dirs: Path,
                                       tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.federated_training import federated_training

    binary = _chromium()
    federated_training(parse_federation_config(federation_raw(federation_dirs, "it-ui", rounds=1)))
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["it-ui-rounds"])))
    assert arts and arts[0].flow_run_id is not None
    ui = live_stack.urls["prefect_ui"]
    run_url = f"{ui}/runs/flow-run/{arts[0].flow_run_id}"
    browser = Browser(binary, tmp_path / "profile")
    try:
        locked = browser.page(run_url, "it-ui", timeout_s=15)
        assert "it-ui" not in locked  # without the login the UI shows nothing of the federation
        login = stack.credentials(Path(live_stack.home))["prefect_auth"]
        browser.js(f"localStorage.setItem('prefect-password', '{base64.b64encode(login.encode()).decode()}')")
        run_page = browser.page(run_url, "federated-training")
        assert "it-ui" in run_page and "Completed" in run_page and "federated-training" in run_page
        table_page = browser.page(f"{ui}/artifacts/artifact/{arts[0].id}", "round 1: test MCC")
    finally:
        browser.close()
    for text in ("hospital", "samples", "train_loss", "local_s", "h1", "h2", "h3", "in the sum", "round 1: test MCC"):
        assert text in table_page, f"{text!r} not on the rendered round-table page"
