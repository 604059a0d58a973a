"""Tasks of encrypted inference at a data owner: list the images, one encrypted session per batch, write the
predictions where the hospital keeps them. Predictions are the hospital's data: they go to its own file,
never to Prefect's logs or artifacts (only counts and timings do)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from primia.data.decode import suffix_of
from primia.errors import DataError
from primia.smpc import client
from primia.smpc.caller import Caller, served_is

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


@task(name="list-images", cache_policy=NO_CACHE, persist_result=False)
def list_images(images: list[str]) -> list[Path]:
    """Files as given; a folder gives its image files, recursively, sorted."""
    out: list[Path] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and suffix_of(f) in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"images: {item} is neither an image file nor a folder")
    if not out:
        raise DataError(f"images: no image files in {images}")
    return out


@task(name="encrypted-batch", cache_policy=NO_CACHE, persist_result=False)
def encrypted_batch(paths: list[Path], caller: Caller, model_uri: str, timeout_s: float
                    ) -> tuple[list[client.Prediction], dict[str, Any]]:
    preds, card, figures = client.encrypted(paths, caller.me, caller.parties, caller.where, len(paths),
                                            timeout_s=timeout_s, check=lambda c: served_is(c.source, model_uri))
    # the model owner may take fewer images a session than the batch: one figure for the batch
    return preds, {"source": card.source, "sessions": len(figures),
                   **{k: sum(f[k] for f in figures) for k in ("online_s", "session_s", "bytes_sent")}}


@task(name="write-predictions", cache_policy=NO_CACHE, persist_result=False)
def write_predictions(preds: list[client.Prediction], output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")  # a failed write never leaves half a file in its place
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "prediction", "probabilities", "logits"])
        for p in preds:
            w.writerow([p.image, p.label, " ".join(f"{v:.6f}" for v in p.probabilities),
                        " ".join(f"{v:.6f}" for v in p.logits)])
    tmp.replace(output)
    get_run_logger().info("wrote %d predictions to %s", len(preds), output)
    return output


@task(name="compare-plain", cache_policy=NO_CACHE, persist_result=False)
def compare_plain(paths: list[Path], model_uri: str, preds: list[client.Prediction]) -> dict[str, Any]:
    return client.compare(preds, client.plain(paths, model_uri)[0])
