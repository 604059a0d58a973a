"""Wake a worker the moment a flow run is scheduled on its pool, instead of at its next poll.

The Prefect server announces each state change as an event (`prefect.flow-run.Scheduled`, related to
the run's work pool) on its event stream (a websocket, with the same login as the API). A worker that
listens polls at once when a run lands on its pool; its timed poll stays as the fallback (a dropped
stream, a missed event). The event only wakes the poll: what the worker then starts is still what it
reads from the API and checks against its pins, so a forged event can at worst cost one extra poll.
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
    """Call `poll` whenever a run is scheduled on `pool` (once `ready`); reconnect after a failure."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = EventFilter(event=EventNameFilter(name=[SCHEDULED]))  # type: ignore[call-arg]
    while True:
        try:
            async with get_events_subscriber(filter=wanted) as events:
                async for event in events:
                    if ready() and on_pool(event, pool):
                        await poll()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the timed poll carries on meanwhile
            log.warning("event stream for pool %s dropped (%s); timed polling only, retrying in %.0f s",
                        pool, type(exc).__name__, RETRY_S)
            await asyncio.sleep(RETRY_S)
