"""`primia bench smpc`: encrypted inference with the three parties as separate processes on loopback TCP.

The model owner and the dealer are the service's own servers (`primia.smpc.service`) in spawned processes;
the data owner is this process, one session per image. Each session takes all of the dealer's material
first (`total_s` counts it), then times the online phase alone (`latency_s`). The parties use throwaway keys
(all three on this machine). The images are the demo's Br35H test images when `primia demo` has written
them (else synthetic); the weights are the registry's model with --model-uri (its architecture and size
then), else the architecture's seeded initialisation. `agreement` compares the encrypted prediction with
the plain model's on the same images, and the logit errors' distribution is reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from primia.data.synthetic import make_synthetic
from primia.data.transforms import preprocess
from primia.errors import ConfigError
from primia.smpc.client import decode_all
from primia.smpc.local_service import Source, local_parties
from primia.smpc.service import Card, infer_batch

TIMEOUT_S = 120.0


def test_images(folder: Path | None, count: int, size: int) -> tuple[list[np.ndarray], str]:
    """`count` decoded images: the demo's test split (both classes, alternating) or synthetic ones."""
    if folder is not None and folder.is_dir():
        by_class = [sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(folder.iterdir()) if d.is_dir()]
        files = [f for group in zip(*by_class, strict=False) for f in group][:count]
        if len(files) >= count:
            return decode_all(files), f"{folder} ({len(files)} files, classes alternating)"
    synthetic = make_synthetic(count, 2, size, seed=5).images
    return [im[0] for im in synthetic], "synthetic (primia.data.synthetic): the demo's test images are not written"


def bench_smpc(model: str, size: int, images: int, model_uri: str | None = None,
               folder: Path | None = None) -> dict[str, Any]:
    if model not in ("small_cnn", "resnet18"):  # else the model owner's process dies and this one waits it out
        raise ConfigError(f"bench smpc: --model must be small_cnn or resnet18, got {model!r}")
    source = Source(uri=model_uri) if model_uri else Source(seeded=model, size=size)
    plain = source.load()
    card = plain.card
    raw, images_from = test_images(folder, images, card.image_size)
    rows = []
    with local_parties(source, TIMEOUT_S) as (me, parties, where):
        for im in raw:
            x = torch.from_numpy(preprocess(im, card.image_size)[None])
            start = time.perf_counter()
            with torch.no_grad():
                expected = plain.model(x).double()
            plain_s = time.perf_counter() - start

            def batch(c: Card, x: torch.Tensor = x) -> torch.Tensor:
                if c != card:
                    raise ConfigError(f"the model owner serves {c}, the bench loaded {card}")
                return x

            logits, _, info = infer_batch(batch, me, parties, where, TIMEOUT_S, prefetch=True)
            error = float((logits - expected).abs().max())
            rows.append({**info, "plain_s": plain_s, "agree": bool(logits.argmax() == expected.argmax()),
                         "logit_error": error})
    med = statistics.median
    errors = sorted(r["logit_error"] for r in rows)
    return {
        "model": card.model, "size": card.image_size, "images": len(rows),
        "latency_s": med(r["online_s"] for r in rows), "total_s": med(r["total_s"] for r in rows),
        "plain_latency_s": med(r["plain_s"] for r in rows),
        "bytes_per_party": med(r["bytes_sent"] for r in rows),
        "rounds": rows[0]["rounds"], "dealer_bytes_per_party": med(r["dealer_bytes"] for r in rows),
        "agreement": sum(r["agree"] for r in rows) / len(rows),
        "max_logit_error": errors[-1], "median_logit_error": med(errors),
        "logit_error_p90": errors[int(0.9 * (len(errors) - 1))],
        "latency_s_range": [min(r["online_s"] for r in rows), max(r["online_s"] for r in rows)],
        "machine": "2-core CPU", "weights": card.source, "images_from": images_from,
    }
