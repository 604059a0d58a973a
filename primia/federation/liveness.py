"""Liveness as a signal: each hospital agent writes a heartbeat into its own bucket every few seconds;
a hospital silent longer than `policy.liveness_s` counts as gone at whatever stage it is.

A killed agent leaves its Prefect flow run RUNNING on the server, so run state alone cannot tell a
dead hospital from a slow one. The heartbeat's age is read with the object store's own clock (its Date
and Last-Modified headers), so no two machines' clocks are compared.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from primia.errors import StoreError
from primia.store.s3 import ObjectStore

HEARTBEAT_S = 2.0  # how often an agent writes its heartbeat


def heartbeat_key(hospital: str) -> str:
    return f"agents/{hospital}/heartbeat.json"


class Heartbeat:
    """The agent's side: a daemon thread that rewrites the heartbeat object until stopped."""

    def __init__(self, store: ObjectStore, hospital: str, running: Callable[[], list[str]] | None = None,
                 interval_s: float = HEARTBEAT_S) -> None:
        self.store, self.hospital, self.interval_s = store, hospital, interval_s
        self.running = running or list
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="primia-heartbeat", daemon=True)
        self.seq = 0

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        self.seq += 1
        body = {"hospital": self.hospital, "seq": self.seq, "running": self.running()}
        self.store.put(heartbeat_key(self.hospital), json.dumps(body).encode())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except StoreError:  # the store is away for a moment: the next beat will tell
                pass

    def stop(self) -> None:
        self._stop.set()


class Liveness:
    """The coordinator's side: which hospitals have been silent too long (read at most every `every_s`)."""

    def __init__(self, stores: Mapping[str, ObjectStore], limit_s: float, every_s: float = 1.0) -> None:
        self.stores, self.limit_s, self.every_s = dict(stores), limit_s, every_s
        self._checked, self._silent, self.ages = 0.0, set[str](), dict[str, float | None]()

    def silence(self, hospital: str) -> str:
        """Why a hospital counts as gone ("" when it is alive)."""
        age = self.ages.get(hospital)
        if age is None:
            return "its agent is offline (no heartbeat)"
        return f"its agent is offline (silent for {age:.0f} s, policy.liveness_s is {self.limit_s:g})" \
            if age > self.limit_s else ""

    def silent(self, hospitals: Iterable[str] | None = None) -> set[str]:
        if time.monotonic() - self._checked >= self.every_s:
            self._checked = time.monotonic()
            for h in list(hospitals or self.stores):
                try:
                    self.ages[h] = self.stores[h].age_s(heartbeat_key(h))
                except StoreError:
                    self.ages[h] = None
            self._silent = {h for h in self.ages if self.silence(h)}
        return set(self._silent)
