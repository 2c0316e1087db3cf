"""Seq under real concurrency: 20 writers x 500 events on one thread, gap-free.

On SQLite and Postgres every writer has its own engine (its own connection),
so the database, not the event loop, decides the interleaving. SQLite
serialises writers on its lock (WAL, busy timeout); that is slow but must be
correct. Memory and JSONL writers are tasks of this process.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from runlane.db.engine import create_engine
from runlane.runtime.events import (
    EventStore,
    JsonlEventStore,
    MemoryEventStore,
    NewEvent,
    SqlEventStore,
)

pytestmark = pytest.mark.anyio

WRITERS = 20
PER_WRITER = 500
BATCH_SIZES = (1, 7, 25, 17)  # a mix of single puts and batches


@pytest.fixture
async def writer_stores(backend: tuple[str, str | None]) -> AsyncIterator[list[EventStore]]:
    """One store per writer (its own engine on SQL; shared in one process otherwise)."""
    name, url = backend
    if name == "memory":
        yield [MemoryEventStore()] * WRITERS
        return
    assert url is not None
    if name == "jsonl":
        yield [JsonlEventStore(url)] * WRITERS
        return
    stores: list[EventStore] = [
        SqlEventStore(create_engine(url, pool_size=1, max_overflow=0), owns_engine=True)
        for _ in range(WRITERS)
    ]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


def _event(writer: int, index: int) -> NewEvent:
    return NewEvent(
        thread_id="shared",
        run_id=f"run-{writer}",
        event_type="ai_message",
        category="message",
        content={"w": writer, "i": index},
    )


async def _write(store: EventStore, writer: int) -> list[list[int]]:
    """Write PER_WRITER events; returns the seqs of each call."""
    calls: list[list[int]] = []
    index = 0
    for size in itertools.cycle(BATCH_SIZES):
        size = min(size, PER_WRITER - index)
        if size == 0:
            return calls
        events = [_event(writer, index + offset) for offset in range(size)]
        index += size
        if size == 1:
            rows = [await store.put(events[0])]
        else:
            rows = await store.put_batch(events)
        calls.append([row["seq"] for row in rows])
    raise AssertionError("unreachable")


async def test_concurrent_writers_get_distinct_gap_free_seqs(
    writer_stores: list[EventStore],
) -> None:
    results = await asyncio.gather(
        *(_write(store, writer) for writer, store in enumerate(writer_stores))
    )

    returned = sorted(seq for calls in results for call in calls for seq in call)
    assert returned == list(range(1, WRITERS * PER_WRITER + 1))
    for calls in results:
        for call in calls:  # a batch gets consecutive seqs
            assert call == list(range(call[0], call[0] + len(call)))
        flat = [seq for call in calls for seq in call]
        assert flat == sorted(flat)  # each writer's events in its own order

    reader = writer_stores[0]
    stored: list[dict[str, object]] = []
    after: int | None = None
    while True:
        page = await reader.list_messages("shared", limit=1000, after_seq=after)
        stored.extend(page.items)
        if not page.has_more:
            break
        after = page.items[-1]["seq"]
    assert [row["seq"] for row in stored] == list(range(1, WRITERS * PER_WRITER + 1))
    by_writer: dict[object, list[object]] = {}
    for row in stored:
        content = row["content"]
        assert isinstance(content, dict)
        by_writer.setdefault(content["w"], []).append(content["i"])
    assert by_writer == {w: list(range(PER_WRITER)) for w in range(WRITERS)}
    assert await reader.count_messages("shared") == WRITERS * PER_WRITER
