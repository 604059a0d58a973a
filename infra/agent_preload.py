"""Imported once by a hospital agent's fork server (`multiprocessing` forkserver preload).

It imports the training stack, so every flow run the agent forks starts warm, and points the data
reader at the agent's private on-disk cache of decoded images. It opens no network connection:
forked children must not share sockets.
"""

from __future__ import annotations

import prefect.engine  # noqa: F401

import flows.local_training  # noqa: F401  # the flow and, through it, torch, MONAI and primia
from primia import runtime
from primia.data.sources import use_disk_cache

_agent = runtime.settings().hospital
use_disk_cache(runtime.settings().home / "hospitals" / (_agent.name or "unnamed") / "cache")
