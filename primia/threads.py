"""Run callables on threads of their own and wait for all; the first error is raised after every one ended."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_all(fns: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            out[i] = fns[i]()
        except BaseException as exc:  # noqa: BLE001  # re-raised below, once every thread has ended
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out
