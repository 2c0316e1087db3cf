"""The engine factory: SQLite transactions that write lock up front, reads never wait."""

from __future__ import annotations

from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from runlane.db.engine import begin_read, begin_write, create_engine

pytestmark = pytest.mark.anyio


async def test_a_read_does_not_wait_for_a_writer_and_a_writer_locks_up_front(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, busy_timeout_ms=100)
    other = create_engine(sqlite_url, busy_timeout_ms=100)
    try:
        async with begin_write(engine) as writer:
            # The write lock is taken before the first statement, even a read.
            await writer.execute(text("SELECT 1"))
            with pytest.raises(OperationalError, match="locked"):
                async with begin_write(other) as second:
                    await second.execute(text("SELECT 1"))
            await writer.execute(text("CREATE TABLE scratch (x INTEGER)"))
            # A plain read on another connection neither waits nor fails.
            async with other.connect() as reader:
                assert (await reader.execute(text("SELECT 1"))).scalar() == 1
        async with other.connect() as reader:
            count = await reader.execute(text("SELECT count(*) FROM scratch"))
            assert count.scalar() == 0
    finally:
        await engine.dispose()
        await other.dispose()


@pytest.fixture
def driver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call runlane makes on aiosqlite's connection thread, by name."""
    calls: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return calls


async def test_round_trips_to_the_driver_thread(sqlite_url: str, driver_calls: list[str]) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with begin_write(engine) as conn:  # opens the pooled connection
            await conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
        driver_calls.clear()
        async with begin_write(engine) as conn:
            await conn.execute(text("INSERT INTO scratch VALUES (1)"))
        # BEGIN IMMEDIATE rides with the statement; the pool's reset ROLLBACK
        # after COMMIT is skipped.
        assert driver_calls == ["_run", "commit"]
        driver_calls.clear()
        async with begin_read(engine) as conn:
            assert (await conn.execute(text("SELECT x FROM scratch"))).scalar() == 1
        # No BEGIN and no ROLLBACK: the statement is its own transaction.
        assert driver_calls == ["_run"]
        driver_calls.clear()
        async with engine.connect() as conn:
            await conn.execute(text("SELECT x FROM scratch"))
        assert driver_calls == ["_run", "rollback"]
        driver_calls.clear()
        async with begin_write(engine):
            pass  # no statement: nothing is sent at all
        assert driver_calls == []
    finally:
        await engine.dispose()


async def test_begin_read_sees_each_commit_and_holds_no_snapshot(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    other = create_engine(sqlite_url)
    try:
        async with begin_write(engine) as conn:
            await conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
        async with begin_read(engine) as reader:
            count = "SELECT count(*) FROM scratch"
            assert (await reader.execute(text(count))).scalar() == 0
            async with begin_write(other) as writer:  # not blocked by the reader
                await writer.execute(text("INSERT INTO scratch VALUES (1)"))
            assert (await reader.execute(text(count))).scalar() == 1
        async with engine.connect() as snapshot:  # a deferred BEGIN keeps its snapshot
            assert (await snapshot.execute(text(count))).scalar() == 1
            async with begin_write(other) as writer:
                await writer.execute(text("INSERT INTO scratch VALUES (2)"))
            assert (await snapshot.execute(text(count))).scalar() == 1
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_failed_write_transaction_rolls_back(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with begin_write(engine) as conn:
            await conn.execute(text("CREATE TABLE scratch (x INTEGER)"))

        async def abandoned_insert() -> None:
            async with begin_write(engine) as conn:
                await conn.execute(text("INSERT INTO scratch VALUES (1)"))
                raise RuntimeError("abandon")

        with pytest.raises(RuntimeError):
            await abandoned_insert()
        async with begin_read(engine) as conn:
            assert (await conn.execute(text("SELECT count(*) FROM scratch"))).scalar() == 0
        async with begin_write(engine) as conn:  # the pooled connection is usable again
            await conn.execute(text("INSERT INTO scratch VALUES (2)"))
    finally:
        await engine.dispose()
