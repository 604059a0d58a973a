"""Screenshots of the MLflow UI for the README, in headless Chromium (Debian's, driven by Playwright):
a registered version with its privacy model card, and the federation's runs in the "Model training"
workspace (`workflowType=machine_learning`; MLflow 3 opens the GenAI one by default).

    python -m infra.screenshot MODEL [--version N] [--out docs/]

The stack's MLflow login is read from its credentials file and given to the browser, never printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from primia.config import load_settings

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("screenshot: Chromium is not installed (Debian: apt-get install chromium)")
    return path


def shoot(model: str, version: str | None, out: Path) -> list[Path]:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    s = load_settings()
    if not s.mlflow.tracking_uri or s.mlflow.username is None or s.mlflow.password is None:
        raise SystemExit("screenshot: the stack is not running (make up)")
    import os

    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", s.mlflow.username.get_secret_value())
    os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", s.mlflow.password.get_secret_value())
    client = MlflowClient(s.mlflow.tracking_uri)
    mv = client.get_model_version(model, version) if version else \
        max(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    experiment = client.get_run(mv.run_id).info.experiment_id
    base = s.mlflow.tracking_uri.rstrip("/")
    workspace = "workflowType=machine_learning"  # the "Model training" workspace
    # (file, url, height): the app scrolls inside its own panel, so the card page gets a tall window
    pages = [(out / "mlflow-model-card.png", f"{base}/#/models/{model}/versions/{mv.version}?{workspace}", 2300),
             (out / "mlflow-runs.png", f"{base}/#/experiments/{experiment}/runs?{workspace}", 700)]
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1500, "height": 2300},
                                      http_credentials={"username": s.mlflow.username.get_secret_value(),
                                                        "password": s.mlflow.password.get_secret_value()})
        # MLflow 3 remembers the workspace in localStorage (default GenAI) and opens its assistant panel
        context.add_init_script("localStorage.setItem('mlflow.workflowType', 'machine_learning');")
        page = context.new_page()
        for path, url, height in pages:
            page.set_viewport_size({"width": 1500, "height": height})
            page.goto(url, wait_until="load")
            page.wait_for_timeout(4000)  # the React app renders after its API calls
            _close_assistant(page)
            page.screenshot(path=str(path), full_page=True)
        browser.close()
    return [p for p, _, _ in pages]


def _close_assistant(page: Any) -> None:
    """Best effort: the assistant panel takes a third of the width; the page is usable without it."""
    panel = page.get_by_text("MLflow Assistant")
    if panel.count():
        close = panel.first.locator("xpath=(ancestor::div[count(.//button)>=3][1]//button)[last()]")
        try:
            close.click(timeout=2000)
            page.wait_for_timeout(800)
        except Exception:  # a changed UI: keep the panel rather than fail the screenshot
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="registered model (the federation id)")
    ap.add_argument("--version", default=None, help="version (default: the newest)")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    args = ap.parse_args(argv)
    for path in shoot(args.model, args.version, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
