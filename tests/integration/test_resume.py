"""Coordinator killed with SIGKILL mid-run and started again: it continues from the last committed
round and ends with the same final weights as an uninterrupted run (bit for bit, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from infra import stack
from primia import runtime
from tests.integration.conftest import federation_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROUNDS = 8


def _train(cfg: Path, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PRIMIA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "primia.cli", "train", "--config", str(cfg), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _config(tmp_path: Path, dirs: Path, fid: str) -> Path:
    raw = federation_raw(dirs, fid, rounds=ROUNDS)
    path = tmp_path / f"{fid}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sigkill_then_resume_gives_identical_weights(live_stack: stack.StackState, federation_dirs: Path,
                                                     tmp_path: Path) -> None:
    home = Path(live_stack.home)
    straight = _train(_config(tmp_path, federation_dirs, "resume-a"), home)
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out.decode()[-2000:]

    cfg_b = _config(tmp_path, federation_dirs, "resume-b")
    store_b = runtime.checkpoints("resume-b")
    victim = _train(cfg_b, home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and max(store_b.committed_rounds(), default=-1) < 2:
        assert victim.poll() is None, victim.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = max(store_b.committed_rounds())
    assert 2 <= killed_at < ROUNDS, f"kill landed after round {killed_at}"

    resumed = _train(cfg_b, home)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()[-2000:]
    assert max(store_b.committed_rounds()) == ROUNDS

    store_a = runtime.checkpoints("resume-a")
    wa = store_a.get_weights(store_a.load_round(ROUNDS).ref("global.safetensors"))
    wb = store_b.get_weights(store_b.load_round(ROUNDS).ref("global.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), f"{k} differs after resume (killed after round {killed_at})"
