"""encrypted-inference: a hospital's batch of images through a registered model, encrypted end to end.

The hospital (data owner) secret-shares each batch with the model owner, which secret-shares the model's
weights back, and a dealer hands out correlated randomness: the model owner never sees an image, the hospital
never a weight, and the logits are opened to the hospital alone. Without a model owner's address the three
parties run on this machine (a demonstration, with throwaway keys); with one, the services must prove keys the
federation's signed roster lists under their roles. Predictions go to `output` (a CSV the hospital keeps);
Prefect sees counts and timings only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from primia.config import load_settings
from primia.smpc.caller import seat
from primia.smpc.service import batches
from tasks.encrypted_inference import compare_plain, encrypted_batch, list_images, write_predictions


@flow(name="encrypted-inference", persist_result=False)
def encrypted_inference(images: list[str], model_uri: str, output: str, model_owner: str = "", dealer: str = "",
                        hospital: str = "", roster: str = "", batch: int = 16, compare: bool = False,
                        timeout_s: float = 120.0) -> dict[str, Any]:
    log = get_run_logger()
    paths = list_images(images)
    preds, figures = [], []
    with seat(load_settings().home, model_uri, model_owner, dealer, hospital, Path(roster) if roster else None,
              timeout_s) as caller:
        for i, r in enumerate(batches(len(paths), batch)):
            got, info = encrypted_batch([paths[j] for j in r], caller, model_uri, timeout_s)
            preds += got
            figures.append(info)
            log.info("batch %d/%d: %d images, online %.2f s, session %.2f s", i + 1, -(-len(paths) // batch),
                     len(r), info["online_s"], info["session_s"])
    written = write_predictions(preds, Path(output))
    summary: dict[str, Any] = {
        "model": figures[0]["source"], "images": len(preds), "sessions": sum(f["sessions"] for f in figures),
        "output": str(written),
        "online_s": sum(f["online_s"] for f in figures), "session_s": sum(f["session_s"] for f in figures),
        "bytes_sent": sum(f["bytes_sent"] for f in figures)}
    if compare:
        summary["comparison"] = compare_plain(paths, model_uri, preds)
    return summary
