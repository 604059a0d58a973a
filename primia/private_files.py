"""Small JSON files only their owner may read: key files, pins, ledgers, credentials (mode 0600).

Written through a temporary file and renamed, so a reader never sees half a file; a file another user
could read is refused, so a secret left world-readable fails closed instead of being used.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from primia.errors import ConfigError


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_private_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; ConfigError naming `what` when it is missing, readable by others or
    not a JSON object."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no {what} at {path}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{what} {path} is readable by others (mode {mode:o}): chmod 600 it")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{what} {path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a JSON object")
    return data
