"""DP-SGD overhead: one training step without DP against the same step under Opacus in each per-sample
gradient mode (hooks, ew, ghost), on the same model, batch and inputs, in the same run.

`epsilon_after_demo`: the epsilon each demo hospital reaches after the demo's rounds at the noise
multiplier primia plans for it (configs/demo.yaml, its data under PRIMIA_HOME when `primia demo` wrote it).
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from primia.config import ModelConfig, load_federation_config
from primia.models.factory import build_model
from primia.privacy.accounting import SampleAccount, plan_noise
from primia.privacy.dpsgd import FASTEST, sample_rate, steps_per_round

MODES = ("hooks", "functorch", "ew", "ghost")
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _batch(batch: int, size: int, channels: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(batch, channels, size, size, generator=g),
                         torch.randint(0, 2, (batch,), generator=g))


def _time_steps(step: Any, steps: int) -> list[float]:
    step()  # warm-up: allocations, hooks
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def _plain(model: nn.Module, data: TensorDataset, steps: int) -> list[float]:
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
    x, y = data.tensors

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return _time_steps(step, steps)


def _private(model: nn.Module, data: TensorDataset, mode: str, steps: int) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="prv")
        made = engine.make_private(module=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                   criterion=nn.CrossEntropyLoss(), data_loader=DataLoader(data, batch_size=len(data)),
                                   noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
                                   grad_sample_mode=mode)
    dp_model, opt = made[0], made[1]
    criterion = made[2] if mode == "ghost" else nn.CrossEntropyLoss()
    x, y = data.tensors

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(dp_model(x), y).backward()
        opt.step()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _time_steps(step, steps)
    finally:
        dp_model._close()


def demo_epsilon() -> dict[str, float] | None:
    """hospital -> epsilon after the demo's rounds at its planned noise (None without the demo data)."""
    from primia.federation.hospital import load_local_data

    cfg = load_federation_config(DEMO)
    p, t = cfg.privacy, cfg.training
    out = {}
    for h in cfg.hospitals:
        if h.data is None or not Path(h.data.path).exists():
            return None
        n = len(load_local_data(h, cfg).train)
        steps = cfg.rounds * steps_per_round(n, t.batch_size, t.local_epochs)
        q = sample_rate(n, t.batch_size)
        sigma = p.noise_multiplier or plan_noise(p.target_epsilon, p.delta, q, steps, p.accountant)
        out[h.name] = SampleAccount.new(cfg.federation_id, h.name, p.accountant, p.delta, sigma, q).epsilon_after(steps)
    return out


def bench_dp(model_name: str, batch: int, size: int, steps: int) -> dict[str, Any]:
    channels = 1
    data = _batch(batch, size, channels)
    cfg = ModelConfig(name=model_name, num_classes=2, in_channels=channels)  # type: ignore[arg-type]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    plain = _plain(build_model(cfg, seed=0), data, steps)
    table: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        try:
            times = _private(build_model(cfg, seed=0), data, mode, steps)
        except Exception as exc:  # noqa: BLE001  # a mode Opacus cannot run for this network: say so
            table[mode] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
            continue
        table[mode] = {"dp_step_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                       "overhead_ratio": statistics.median(times) / statistics.median(plain)}
    chosen = FASTEST.get(model_name, "hooks")
    best = table.get(chosen, {})
    eps = demo_epsilon()
    return {
        "model": model_name, "batch": batch, "image_size": size, "mode": chosen,
        "nondp_step_s": statistics.median(plain), "nondp_min_s": min(plain), "nondp_max_s": max(plain),
        "dp_step_s": best.get("dp_step_s"), "overhead_ratio": best.get("overhead_ratio"),
        "epsilon_after_demo": max(eps.values()) if eps else None, "epsilon_after_demo_by_hospital": eps,
        "modes": table, "steps_timed": steps, "threads": torch.get_num_threads(),
    }
