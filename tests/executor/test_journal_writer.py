"""The journal's writer: batching, retry with backoff, the bounded buffer, the final flush.

Stores are real MemoryEventStores whose ``put_batch`` is made to fail or to
wait on an asyncio.Event; no sleeps decide an outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from runlane.executor.journal_writer import EventWriter, WriterLimits
from runlane.runtime.events.base import NewEvent
from runlane.runtime.events.memory import MemoryEventStore

pytestmark = pytest.mark.anyio

FAST = WriterLimits(retry_initial=0, retry_max=0, flush_timeout=5)


class FlakyStore(MemoryEventStore):
    """Fails the first ``failures`` batches, then writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        return await super().put_batch(events)


class GatedStore(MemoryEventStore):
    """Each batch waits until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        self.entered.set()
        await self.gate.wait()
        return await super().put_batch(events)


class NotifyingStore(MemoryEventStore):
    """Sets ``wrote`` after every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        stored = await super().put_batch(events)
        self.wrote.set()
        return stored


def event(n: int, category: str = "message") -> NewEvent:
    return NewEvent(
        thread_id="t1", run_id="r1", event_type=f"{category}_{n}", category=category, content=n
    )


async def stored(store: MemoryEventStore) -> list[tuple[str, Any]]:
    page = await store.list_events("t1", "r1", limit=1000)
    return [(e["event_type"], e["content"]) for e in page.items]


async def test_batches_are_written_in_order() -> None:
    store = MemoryEventStore()
    writer = EventWriter(store, label="r1", limits=WriterLimits(batch_size=3))
    for n in range(10):
        writer.add(event(n))  # before start: buffered, written once started
    writer.start()
    assert await writer.close() is True
    assert [content for _, content in await stored(store)] == list(range(10))
    assert (writer.written, writer.pending, writer.dropped) == (10, 0, 0)


async def test_a_failed_batch_is_retried_until_written(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(failures=4)
    writer = EventWriter(store, label="r1", limits=FAST)
    writer.start()
    for n in range(5):
        writer.add(event(n))
    with caplog.at_level(logging.WARNING, logger="runlane.executor.journal_writer"):
        assert await writer.close() is True
    assert [content for _, content in await stored(store)] == list(range(5))
    assert writer.failures == 4
    assert store.calls >= 5
    assert sum("failed (attempt" in r.getMessage() for r in caplog.records) == 4


async def test_backoff_doubles_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def record_sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("runlane.executor.journal_writer.asyncio.sleep", record_sleep)
    store = FlakyStore(failures=5)
    limits = WriterLimits(retry_initial=0.1, retry_max=0.5, flush_timeout=5)
    writer = EventWriter(store, label="r1", limits=limits)
    writer.start()
    writer.add(event(1))
    assert await writer.close() is True
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]


async def test_a_full_buffer_drops_trace_rows_first_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = GatedStore()
    writer = EventWriter(store, label="r1", limits=WriterLimits(max_buffer=4, batch_size=1))
    writer.start()
    writer.add(event(0, "trace"))
    with anyio.fail_after(5):
        await store.entered.wait()  # trace 0 is in flight and counts toward the bound
    with caplog.at_level(logging.WARNING, logger="runlane.executor.journal_writer"):
        writer.add(event(1, "trace"))
        writer.add(event(2))
        writer.add(event(3, "trace"))
        assert not caplog.records
        writer.add(event(4, "trace"))  # full: an incoming trace row is dropped
        writer.add(event(5))  # full: evicts the oldest buffered trace row (1)
        writer.add(event(6, "lifecycle"))  # full: evicts trace 3
        writer.add(event(7))  # full of message rows: kept beyond the bound
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1, "one warning per episode"
    assert full[0].levelno == logging.WARNING
    assert (writer.dropped, writer.overflow, writer.pending) == (3, 1, 5)
    store.gate.set()
    assert await writer.close() is True
    assert await stored(store) == [
        ("trace_0", 0),
        ("message_2", 2),
        ("message_5", 5),
        ("lifecycle_6", 6),
        ("message_7", 7),
    ]


async def test_the_final_flush_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    store = GatedStore()  # never opened
    writer = EventWriter(store, label="r1", limits=WriterLimits(flush_timeout=0.05))
    writer.start()
    writer.add(event(1))
    writer.add(event(2))
    with caplog.at_level(logging.ERROR, logger="runlane.executor.journal_writer"):
        assert await writer.close() is False
    assert writer.unwritten == 2
    assert any("2 events not written" in r.getMessage() for r in caplog.records)
    assert await stored(store) == []


async def test_a_row_the_store_refuses_does_not_block_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore()
    writer = EventWriter(store, label="r1", limits=FAST)
    bad = NewEvent(thread_id="t1", run_id="r1", event_type="x", category="nonsense")
    for item in (event(1), bad, event(2)):
        writer.add(item)
    writer.start()
    with caplog.at_level(logging.ERROR, logger="runlane.executor.journal_writer"):
        assert await writer.close() is True
    assert await stored(store) == [("message_1", 1), ("message_2", 2)]
    assert (writer.written, writer.rejected) == (2, 1)
    assert any("refused" in r.getMessage() for r in caplog.records)


async def test_rows_added_from_another_thread_wake_the_writer() -> None:
    store = NotifyingStore()
    writer = EventWriter(store, label="r1")
    writer.start()
    await anyio.to_thread.run_sync(lambda: [writer.add(event(n)) for n in range(3)])
    with anyio.fail_after(5):
        while len(await stored(store)) < 3:  # woken by the thread, not by close()
            await store.wrote.wait()
            store.wrote.clear()
    assert [content for _, content in await stored(store)] == [0, 1, 2]
    assert await writer.close() is True


class FlakyReceiptStore(MemoryEventStore):
    """``put_if_absent`` fails the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def put_if_absent(self, event: NewEvent) -> dict[str, Any] | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        return await super().put_if_absent(event)


async def test_the_receipt_is_retried_and_written_once() -> None:
    store = FlakyReceiptStore(failures=3)
    writer = EventWriter(store, label="r1", limits=FAST)
    receipt = NewEvent(thread_id="t1", run_id="r1", event_type="run.delivery", category="lifecycle")
    assert await writer.put_singleton(receipt) is True
    assert await writer.put_singleton(receipt) is True  # already there: nothing written
    assert await stored(store) == [("run.delivery", None)]
    assert writer.failures == 3


async def test_a_receipt_the_store_never_takes_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyReceiptStore(failures=10**9)
    limits = WriterLimits(retry_initial=0, retry_max=0, flush_timeout=0.05)
    writer = EventWriter(store, label="r1", limits=limits)
    receipt = NewEvent(thread_id="t1", run_id="r1", event_type="run.delivery", category="lifecycle")
    with caplog.at_level(logging.ERROR, logger="runlane.executor.journal_writer"):
        assert await writer.put_singleton(receipt) is False
    assert any("run.delivery not written" in r.getMessage() for r in caplog.records)
