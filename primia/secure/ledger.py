"""A hospital's memory of the sums it helped unmask: at most one per (federation, round, global model).

Two unmasked sums from the same global model over different sets of hospitals differ by exactly the
updates of the hospitals in one set and not the other: a coordinator that retries a round with
another sample could isolate one hospital's update. So a hospital reveals shares for a second sum from
the same model only if it is over the very same set (a coordinator restarted mid-round may ask again).
The ledger is a small JSON file in the hospital's private folder, updated under a file lock, so it
holds across runs, agents restarts and concurrent runs on one machine.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from primia.private_files import write_private_json
from primia.secure.protocol import ProtocolViolation, second_sum


class FileLedger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def claim(self, key: str, members: list[str], session: str) -> None:
        """Record that this hospital reveals shares for the sum over `members` from `key`'s model; refuse
        if it already did for another set."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            claims = self._read()
            held = claims.get(key)
            if held is not None and held["members"] != members:
                raise second_sum(key, [str(m) for m in held["members"]], str(held["session"]),  # type: ignore[attr-defined]
                                 members)
            if held is None:
                claims[key] = {"members": members, "session": session}
                self._write(claims)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict[str, dict[str, object]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            # a damaged ledger must not let a hospital forget what it revealed: fail closed
            raise ProtocolViolation(f"unmask ledger {self.path} is damaged: refusing to reveal shares until it is "
                                    f"repaired") from None
        return data if isinstance(data, dict) else {}

    def _write(self, claims: dict[str, dict[str, object]]) -> None:
        write_private_json(self.path, claims)
