"""Where a run's code came from: the git commit, whether the work tree was dirty, primia's version."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import primia

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """MLflow's own source tags (the UI shows the commit) and ours. 'unknown' outside a git checkout."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"mlflow.source.git.commit": commit, "mlflow.source.type": "JOB", "primia.git.dirty": dirty,
            "primia.version": primia.__version__}
