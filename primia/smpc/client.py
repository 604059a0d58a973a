"""The data owner's side over image files: decode, batch, one encrypted session per batch, predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from primia.data.decode import decode_image
from primia.data.transforms import preprocess
from primia.errors import DataError
from primia.smpc.link import Identity
from primia.smpc.parties import Parties
from primia.smpc.service import Card, Endpoints, infer_batch


@dataclass(frozen=True)
class Prediction:
    image: str
    label: str
    probabilities: tuple[float, ...]
    logits: tuple[float, ...]


def decode_all(paths: Sequence[Path]) -> list[np.ndarray]:
    """Every file decoded before any session starts: a bad file is named up front, not after minutes."""
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"image {p}: no such file")
        out.append(decode_image(Path(p)))
    return out


def predictions(names: Sequence[str], logits: np.ndarray, class_names: Sequence[str]) -> list[Prediction]:
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    return [Prediction(n, str(class_names[int(np.argmax(p))]), tuple(map(float, p)), tuple(map(float, lo)))
            for n, p, lo in zip(names, probs, logits, strict=True)]


def encrypted(paths: Sequence[Path], me: Identity, parties: Parties, where: Endpoints, batch: int = 16,
              on_batch: Callable[[int, dict[str, Any]], None] | None = None, timeout_s: float = 120.0,
              check: Callable[[Card], None] | None = None) -> tuple[list[Prediction], Card, list[dict[str, Any]]]:
    """Predictions for `paths` that neither reveal an image to the model owner nor a weight to this side, in
    sessions of at most `batch` images (fewer where the model owner takes fewer). `check(card)` runs before
    any image is shared (e.g. that the model owner serves the model asked for); every later session must
    find the same model, or the run stops (an alias moved: the classes could differ)."""
    raw = decode_all(paths)
    if not raw:
        raise DataError("no images given")
    out: list[np.ndarray] = []
    figures: list[dict[str, Any]] = []
    first: list[Card] = []
    done = 0
    while done < len(raw):
        def images(c: Card, done: int = done) -> torch.Tensor:
            if first and c != first[0]:
                raise DataError(f"the model owner now serves {c.source}, not {first[0].source} as for the "
                                f"first {done} images: stopped")
            if check:
                check(c)
            take = range(done, min(len(raw), done + min(batch, c.max_batch)))
            return torch.from_numpy(np.stack([preprocess(raw[i], c.image_size) for i in take]))

        logits, card, info = infer_batch(images, me, parties, where, timeout_s)
        first[:1] = [card]
        out.append(logits.numpy())
        figures.append(info)
        done += len(logits)
        if on_batch:
            on_batch(len(logits), info)
    return predictions([str(p) for p in paths], np.concatenate(out), first[0].class_names), first[0], figures


def plain(paths: Sequence[Path], uri: str) -> tuple[list[Prediction], str]:
    """The same files through the registered pyfunc's own preprocessing and network, in this process (the
    comparison only a holder of both the images and the model can make); logits, not just probabilities."""
    import mlflow
    from primia.smpc.champion import resolve

    source = resolve(uri)
    impl = mlflow.pyfunc.load_model(source).unwrap_python_model()
    impl.allow_paths = True  # in-process: the caller's own files
    decode_all(paths)  # the same clear error for a missing file
    x = torch.from_numpy(impl.preprocess([str(p) for p in paths]))
    with torch.no_grad():
        logits = impl.model(x).double().numpy()
    return predictions([str(p) for p in paths], logits, impl.class_names), source


def compare(enc: Sequence[Prediction], plain: Sequence[Prediction]) -> dict[str, Any]:
    """Agreement of the predicted classes and the distribution of the largest logit error per image."""
    diffs = np.array([np.abs(np.subtract(e.logits, p.logits)).max() for e, p in zip(enc, plain, strict=True)])
    return {"images": len(diffs), "agreement": float(np.mean([e.label == p.label for e, p in zip(enc, plain,
                                                                                                strict=True)])),
            "max_logit_error": float(diffs.max()), "median_logit_error": float(np.median(diffs)),
            "p90_logit_error": float(np.quantile(diffs, 0.9)), "p99_logit_error": float(np.quantile(diffs, 0.99))}
