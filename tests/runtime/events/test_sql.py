"""What only the SQL backend promises: the singleton index and retried transactions."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import OperationalError

from runlane.db.engine import create_engine
from runlane.runtime.events import SqlEventStore
from runlane.runtime.runs.retry import PersistenceRetryPolicy

from .conftest import ev

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sql_store(backend: tuple[str, str | None]) -> AsyncIterator[SqlEventStore]:
    _, url = backend
    assert url is not None
    store = SqlEventStore.from_url(url)
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_the_singleton_index_holds_across_thread_ids(sql_store: SqlEventStore) -> None:
    receipt = ev("t-1", category="lifecycle", event_type="run.delivery")

    assert await sql_store.put_if_absent(receipt) is not None
    # The same run under another thread id: the per-thread check cannot see
    # it, the unique index refuses it, and the reserved seq is given back.
    assert (
        await sql_store.put_if_absent(ev("t-2", category="lifecycle", event_type="run.delivery"))
        is None
    )
    assert (await sql_store.put(ev("t-2")))["seq"] == 1
    # put is never a singleton write.
    assert (await sql_store.put(ev("t-1", category="lifecycle", event_type="run.delivery")))[
        "seq"
    ] == 2


class _ReleaseOnRetry(logging.Handler):
    """Ends the blocking transaction when the store logs its first retry."""

    def __init__(self, blocker: sqlite3.Connection) -> None:
        super().__init__()
        self.blocker = blocker
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.retries += 1
        self.blocker.rollback()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_write_is_retried_as_a_whole(
    backend: tuple[str, str | None], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = backend
    assert url is not None
    path = url.split(":///", 1)[1]
    store = SqlEventStore(
        create_engine(url, busy_timeout_ms=1),
        owns_engine=True,
        retry=PersistenceRetryPolicy(max_attempts=3, initial_delay=0),
    )
    blocker = sqlite3.connect(path, isolation_level=None)
    handler = _ReleaseOnRetry(blocker)
    logger = logging.getLogger("runlane.runtime.runs.retry")
    logger.addHandler(handler)
    try:
        await store.put(ev())
        blocker.execute("BEGIN IMMEDIATE")

        rows = await store.put_batch([ev(), ev("t-2")])

        assert handler.retries == 1
        assert [row["seq"] for row in rows] == [2, 1]
        assert [r["seq"] for r in (await store.list_messages("t-1")).items] == [1, 2]
    finally:
        logger.removeHandler(handler)
        blocker.close()
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_write_that_fails_for_good_leaves_no_gap(backend: tuple[str, str | None]) -> None:
    _, url = backend
    assert url is not None
    store = SqlEventStore(
        create_engine(url, busy_timeout_ms=1),
        owns_engine=True,
        retry=PersistenceRetryPolicy(max_attempts=1),
    )
    blocker = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
    try:
        await store.put(ev())
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError):
            await store.put_batch([ev(), ev()])
        blocker.rollback()

        assert (await store.put(ev()))["seq"] == 2
        assert await store.count_messages("t-1") == 2
    finally:
        blocker.close()
        await store.close()
