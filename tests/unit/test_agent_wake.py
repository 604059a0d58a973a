"""The agent's event wake-up: which events wake it, and that a dropped stream falls back to polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prefect.events import Event

from infra import agent_wake


def _scheduled(pool: str, role: str = "work-pool") -> Event:
    return Event(event=agent_wake.SCHEDULED, resource={"prefect.resource.id": "prefect.flow-run.1"},
                 related=[{"prefect.resource.id": f"prefect.{role}.x", "prefect.resource.role": role,
                           "prefect.resource.name": pool}])


def test_only_a_run_on_this_pool_wakes_it() -> None:
    assert agent_wake.on_pool(_scheduled("hospital-a"), "hospital-a")
    assert not agent_wake.on_pool(_scheduled("hospital-b"), "hospital-a")
    assert not agent_wake.on_pool(_scheduled("hospital-a", role="work-queue"), "hospital-a")


def test_it_polls_for_events_on_its_pool_only_and_reconnects_after_a_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[Any] = [[_scheduled("other"), _scheduled("p")], RuntimeError("dropped"), [_scheduled("p")]]
    polls: list[int] = []

    @asynccontextmanager
    async def subscriber(filter: Any) -> AsyncIterator[AsyncIterator[Event]]:  # noqa: A002  # Prefect's name
        assert filter.event.name == [agent_wake.SCHEDULED]
        nxt = streams.pop(0) if streams else []
        if isinstance(nxt, Exception):
            raise nxt

        async def events() -> AsyncIterator[Event]:
            for e in nxt:
                yield e
                await asyncio.sleep(0.05)  # one poll per event: none arrives while a poll runs
            if not streams:
                await asyncio.sleep(3600)  # a live stream with nothing more to say

        yield events()

    async def poll() -> None:
        polls.append(1)

    monkeypatch.setattr("prefect.events.clients.get_events_subscriber", subscriber)
    monkeypatch.setattr(agent_wake, "RETRY_S", 0.01)

    async def run() -> None:
        task = asyncio.create_task(agent_wake.wake_on_scheduled("p", poll, lambda: True))
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not streams:
                break
        await asyncio.sleep(0.3)  # settle: a wrong poll would have come by now
        task.cancel()

    asyncio.run(run())
    assert not streams and len(polls) == 2  # one per event on pool p, across the reconnect; none for "other"


def test_wake_ups_during_a_poll_merge_into_one(monkeypatch: pytest.MonkeyPatch) -> None:
    polls: list[int] = []

    @asynccontextmanager
    async def subscriber(filter: Any) -> AsyncIterator[AsyncIterator[Event]]:  # noqa: A002
        async def events() -> AsyncIterator[Event]:
            for _ in range(20):  # a replayed minute of events, all at once
                yield _scheduled("p")
            await asyncio.sleep(3600)

        yield events()

    async def poll() -> None:
        polls.append(1)
        await asyncio.sleep(0.1)

    monkeypatch.setattr("prefect.events.clients.get_events_subscriber", subscriber)

    async def run() -> None:
        task = asyncio.create_task(agent_wake.wake_on_scheduled("p", poll, lambda: True))
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(run())
    assert 1 <= len(polls) <= 2
