"""What a coordinator (or anyone holding the Prefect API) might swap in for a hospital's deployment.
The hospital's pinned worker must refuse it; if it ever ran, it would leave a marker file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow


@flow(name="local-training")
def local_training(server_round: int, global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str,
                   train: bool = True, secagg: dict[str, Any] | None = None, stats: bool = False,
                   validate: bool = True) -> dict[str, Any]:
    Path("/tmp/primia-evil-ran").write_text("the hospital ran the coordinator's code")
    return {}
