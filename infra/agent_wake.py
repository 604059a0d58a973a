"""Wake a worker the moment a flow run is scheduled on its pool, instead of at its next poll.

The Prefect server announces each state change as an event (`prefect.flow-run.Scheduled`, related to
the run's work pool) on its event stream (a websocket, with the same login as the API). A worker that
listens polls at once when a run lands on its pool; its timed poll stays as the fallback (a dropped
stream, a missed event). The event only wakes the poll: what the worker then starts is still what it
reads from the API and checks against its pins, so a forged event can at worst cost one extra poll.
Wake-ups that arrive while a poll runs (a burst, or the minute of events a new connection replays)
are merged into one poll after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("primia.agent")
SCHEDULED = "prefect.flow-run.Scheduled"
RETRY_S = 5.0


def on_pool(event: Any, pool: str) -> bool:
    """The event concerns a run on this work pool (by the pool's name among its related resources)."""
    return any(r.get("prefect.resource.role") == "work-pool" and r.get("prefect.resource.name") == pool
               for r in event.related)


async def wake_on_scheduled(pool: str, poll: Callable[[], Awaitable[Any]], ready: Callable[[], bool]) -> None:
    """Call `poll` after runs are scheduled on `pool` (once `ready`); reconnect after the stream ends."""
    wake = asyncio.Event()
    poller = asyncio.create_task(_poll_when_woken(wake, poll, pool))
    try:
        while True:
            await _listen(pool, wake, ready)
            await asyncio.sleep(RETRY_S)  # also after a clean close: never a tight reconnect loop
    finally:
        poller.cancel()


async def _listen(pool: str, wake: asyncio.Event, ready: Callable[[], bool]) -> None:
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = EventFilter(event=EventNameFilter(name=[SCHEDULED]))  # type: ignore[call-arg]
    try:
        async with get_events_subscriber(filter=wanted) as events:
            async for event in events:
                if ready() and on_pool(event, pool):
                    wake.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  # the timed poll carries on meanwhile
        log.warning("event stream for pool %s dropped (%s); timed polling only, retrying in %.0f s",
                    pool, type(exc).__name__, RETRY_S)


async def _poll_when_woken(wake: asyncio.Event, poll: Callable[[], Awaitable[Any]], pool: str) -> None:
    while True:
        await wake.wait()
        wake.clear()  # what arrives during the poll wakes one more poll, not one each
        try:
            await poll()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the worker's own loop reports its failures too
            log.warning("poll of pool %s after a scheduled run failed (%s)", pool, type(exc).__name__)
