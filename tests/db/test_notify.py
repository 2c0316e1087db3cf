"""Postgres notifications between processes: sent in the writing transaction, heard by Listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import anyio
import pytest

from runlane.db.notify import CANCEL_CHANNEL, DISPATCH_CHANNEL, Listener
from runlane.runtime.runs.schemas import CancelAction, MultitaskStrategy
from runlane.runtime.runs.store.sql import SqlRunStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class Heard:
    def __init__(self) -> None:
        self.payloads: dict[str, list[str]] = {CANCEL_CHANNEL: [], DISPATCH_CHANNEL: []}
        self.changed = asyncio.Event()

    def on(self, channel: str) -> Callable[[str], None]:
        def callback(payload: str) -> None:
            self.payloads[channel].append(payload)
            self.changed.set()

        return callback

    async def until(self, channel: str, count: int) -> list[str]:
        with anyio.fail_after(10):
            while len(self.payloads[channel]) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.payloads[channel]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlRunStore]:
    store = SqlRunStore.from_url(postgres_url)
    yield store
    await store.close()


@pytest.fixture
async def heard(postgres_url: str) -> AsyncIterator[Heard]:
    heard = Heard()
    listener = Listener(
        postgres_url,
        {CANCEL_CHANNEL: heard.on(CANCEL_CHANNEL), DISPATCH_CHANNEL: heard.on(DISPATCH_CHANNEL)},
    )
    await listener.start()
    yield heard
    await listener.close()


async def test_a_cancel_request_notifies_once_it_wins(store: SqlRunStore, heard: Heard) -> None:
    await store.admit("run-1", thread_id="t1", strategy=MultitaskStrategy.reject)
    now = datetime.now(UTC)

    assert await store.request_cancel("run-1", CancelAction.interrupt, now=now) is not None
    assert await store.request_cancel("run-1", CancelAction.rollback, now=now) is not None

    assert await heard.until(CANCEL_CHANNEL, 1) == ["run-1"]
    # The losing second request sent nothing; a third event proves the channel is live.
    await store.admit("run-2", thread_id="t2", strategy=MultitaskStrategy.reject)
    await store.request_cancel("run-2", CancelAction.interrupt, now=now)
    assert await heard.until(CANCEL_CHANNEL, 2) == ["run-1", "run-2"]


async def test_a_preempting_admission_notifies_every_run_it_ended(
    store: SqlRunStore, heard: Heard
) -> None:
    await store.admit("old", thread_id="t1", strategy=MultitaskStrategy.enqueue)
    await store.admit("waiting", thread_id="t1", strategy=MultitaskStrategy.enqueue)

    admission = await store.admit("new", thread_id="t1", strategy=MultitaskStrategy.interrupt)

    assert list(admission.preempted) == ["old", "waiting"]
    assert sorted(await heard.until(CANCEL_CHANNEL, 2)) == ["old", "waiting"]


async def test_free_lanes_are_announced_on_the_dispatch_channel(
    store: SqlRunStore, heard: Heard
) -> None:
    await store.announce_free_lanes(["t1", "t2"])

    assert await heard.until(DISPATCH_CHANNEL, 2) == ["t1", "t2"]


async def test_a_rejected_admission_notifies_nothing(store: SqlRunStore, heard: Heard) -> None:
    await store.admit("holder", thread_id="t1", strategy=MultitaskStrategy.reject)
    with pytest.raises(Exception, match="active run"):
        await store.admit("second", thread_id="t1", strategy=MultitaskStrategy.reject)
    await store.announce_free_lanes(["marker"])

    assert await heard.until(DISPATCH_CHANNEL, 1) == ["marker"]
    assert heard.payloads[CANCEL_CHANNEL] == []
