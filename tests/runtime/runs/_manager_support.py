"""Helpers shared by the RunManager test modules (``test_manager*.py``).

Every module defines two thin fixtures on top of these helpers:

- ``store_url`` (sync, parametrized over :data:`STORE_KINDS`): ``None`` for
  the memory store, else the fresh database URL of ``sqlite_url`` /
  ``postgres_url`` from ``tests/conftest.py``. It is sync because those
  fixtures create databases with ``asyncio.run``.
- ``store`` (async): the run store on that URL, closed and its engine
  disposed at teardown.

Nothing here sleeps: waits are on events or on bounded ``asyncio.sleep(0)``
yields, always under ``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from runlane.runtime.runs.schemas import RunRecord
from runlane.runtime.runs.store.base import RunStore
from runlane.runtime.runs.store.memory import MemoryRunStore

STORE_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
LANE_KINDS = [pytest.param("none", id="no-store"), *STORE_KINDS]
"""Lane behaviour holds without a store (local lanes) and on every store."""
"""Every run store backend; SQL ones get a fresh migrated database per test."""

WAIT_LIMIT = 30.0  # a guard against hangs, not a timing claim: CI machines are slow
"""Seconds any awaited condition may take before the test fails (a guard, not a race)."""

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def resolve_store_url(request: pytest.FixtureRequest) -> str | None:
    kind = request.param
    if kind == "none":
        return "none"
    if kind == "memory":
        return None
    return str(request.getfixturevalue(f"{kind}_url"))


@asynccontextmanager
async def open_store(url: str | None) -> AsyncIterator[RunStore]:
    if url is None:
        yield MemoryRunStore()
        return
    from runlane.db.engine import create_engine
    from runlane.runtime.runs.store.sql import SqlRunStore

    engine = create_engine(url)
    try:
        store = SqlRunStore(engine)
        try:
            yield store
        finally:
            await store.close()
    finally:
        await engine.dispose()


class FakeClock:
    """A wall clock for leases that moves only when the test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def wait_for(predicate: Callable[[], bool], *, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded by WAIT_LIMIT)."""
    try:
        with anyio.fail_after(WAIT_LIMIT):
            while not predicate():  # noqa: ASYNC110 - yields only, no timed sleep
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def wait_event(event: asyncio.Event, *, what: str) -> None:
    try:
        with anyio.fail_after(WAIT_LIMIT):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def settle(rounds: int = 50) -> None:
    """Let every ready task run for a while (used to show something did NOT happen)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def finish(record: RunRecord) -> None:
    """Await the run's task, if it has one, under the wait limit."""
    if record.task is not None:
        with anyio.fail_after(WAIT_LIMIT):
            await asyncio.gather(record.task, return_exceptions=True)


class GatedWork:
    """Work coroutines whose start and end the test controls with events.

    ``work(run_id)`` returns a Work callable; the run records its start in
    ``order`` and sets ``started[run_id]``, then waits for ``release[run_id]``.
    ``concurrent``/``max_concurrent`` count the runs inside work at once.
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self.started: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}
        self.cancelled: dict[str, asyncio.Event] = {}
        self.concurrent = 0
        self.max_concurrent = 0

    def work(
        self, run_id: str, *, result: Any = None, fail: BaseException | None = None
    ) -> Callable[[RunRecord], Awaitable[Any]]:
        started = self.started.setdefault(run_id, asyncio.Event())
        release = self.release.setdefault(run_id, asyncio.Event())
        cancelled = self.cancelled.setdefault(run_id, asyncio.Event())

        async def _work(record: RunRecord) -> Any:
            assert record.run_id == run_id
            self.order.append(run_id)
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            finally:
                self.concurrent -= 1
            if fail is not None:
                raise fail
            return result

        return _work


class CallCountingStore(MemoryRunStore):
    """A memory store that counts calls to each method that writes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def writes(self) -> int:
        return sum(self.calls.values())

    async def put(self, run_id: str, *, thread_id: str, **fields: Any) -> None:
        self._count("put")
        await super().put(run_id, thread_id=thread_id, **fields)

    async def admit(self, run_id: str, *, thread_id: str, strategy: Any, **fields: Any) -> Any:
        self._count("admit")
        return await super().admit(run_id, thread_id=thread_id, strategy=strategy, **fields)

    async def update_status(self, run_id: str, status: str, *, error: str | None = None) -> bool:
        self._count("update_status")
        return await super().update_status(run_id, status, error=error)

    async def update_run_completion(self, run_id: str, *, status: str, **stats: Any) -> bool:
        self._count("update_run_completion")
        return await super().update_run_completion(run_id, status=status, **stats)

    async def start_run(self, run_id: str) -> bool:
        self._count("start_run")
        return await super().start_run(run_id)

    async def claim_next(self, thread_id: str, **lease: Any) -> dict[str, Any] | None:
        self._count("claim_next")
        return await super().claim_next(thread_id, **lease)

    async def request_cancel(self, run_id: str, action: Any, *, now: datetime) -> Any:
        self._count("request_cancel")
        return await super().request_cancel(run_id, action, now=now)


async def row_count(store: RunStore, *thread_ids: str) -> int:
    total = 0
    for thread_id in thread_ids:
        total += len(await store.list_by_thread(thread_id, limit=10_000))
    return total


async def stored(store: RunStore | None, run_id: str) -> dict[str, Any] | None:
    return None if store is None else await store.get(run_id)


async def assert_stored_status(store: RunStore | None, run_id: str, status: str) -> None:
    if store is None:
        return
    row = await store.get(run_id)
    assert row is not None
    assert row["status"] == status
