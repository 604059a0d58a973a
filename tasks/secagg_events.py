"""Secure aggregation's waits woken by Prefect events in distributed mode.

The parties of a distributed round are separate processes (the coordinator's flow, each hospital's
agent), so a post in one cannot wake a wait in another in memory; each used to find it at its next
0.1 s poll of the store, one poll per stage and direction. Here every post is also announced as a
Prefect event (`primia.secagg.message` by a hospital, `primia.secagg.roster` by the coordinator), with
only the federation and the session in its resource id, and each party listens on the Prefect server's
event stream for its federation's announcements. An event only wakes a wait: the store is then read and
everything verified as before, and the timed poll stays for a lost event or a dropped stream.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from typing import Any

from prefect.events import emit_event

from primia.secure import transport

EVENTS = {"message": "primia.secagg.message", "roster": "primia.secagg.roster"}
KIND_OF = {name: kind for kind, name in EVENTS.items()}
RETRY_S = 5.0
log = logging.getLogger("primia.secagg")
_lock = threading.Lock()
_listening: set[tuple[int, str, str, str]] = set()  # (process, federation, kind, session): a forked child
# starts its own


def resource_id(federation: str, session: str = "") -> str:
    return f"primia.secagg.{federation}.{session}"


def listen(federation: str, kind: str, session: str = "") -> None:
    """From now on (this process), announce secure-aggregation posts and wake on the federation's posts of
    `kind`: "message" for the coordinator (the hospitals' stage messages), "roster" for a hospital (the
    coordinator's rosters); a hospital woken by its peers' messages would list the store for nothing. A
    `session` narrows it to one run of the protocol: a new connection replays the last minute of what it
    listens to, and a hospital's run should not start by listing the store for older sessions' rosters.
    Both run in a copy of the caller's context: the flow run's Prefect settings and client (a helper thread's
    own context is empty)."""
    here = contextvars.copy_context()

    def announce(posted: str, fed: str, of_session: str) -> None:
        resource = {"prefect.resource.id": resource_id(fed, of_session)}
        here.copy().run(emit_event, event=EVENTS[posted], resource=resource)

    transport.announce_with(announce)
    with _lock:
        if (os.getpid(), federation, kind, session) in _listening:
            return
        _listening.add((os.getpid(), federation, kind, session))
    wanted = resource_id(federation, session)
    threading.Thread(target=here.copy().run, args=(asyncio.run, _listen_forever(wanted, kind)), daemon=True,
                     name=f"primia-secagg-events-{federation}").start()


async def _listen_forever(prefix: str, kind: str) -> None:
    while True:
        await _listen(prefix, kind)
        await asyncio.sleep(RETRY_S)  # also after a clean close: never a tight reconnect loop


async def _listen(prefix: str, kind: str) -> None:
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[EVENTS[kind]]),  # type: ignore[call-arg]
                         resource=EventResourceFilter(id_prefix=[prefix]))  # type: ignore[call-arg]
    try:
        async with get_events_subscriber(filter=wanted) as events:
            async for event in events:
                _wake(event)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  # the timed poll carries on meanwhile
        log.warning("secure-aggregation event stream for %s dropped (%s); polling only, retrying in %.0f s",
                    prefix, type(exc).__name__, RETRY_S)


def _wake(event: Any) -> None:
    kind = KIND_OF.get(event.event)
    if kind is not None:
        transport.woken(kind)
