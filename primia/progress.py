"""A tiny progress channel from the core/flows to whoever watches (the CLI's rich bars).

Flows cannot take callables as parameters (Prefect validates and records them), so listeners
register here, per process. With no listener, reporting costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def report(event: str, **fields: Any) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event, fields)
