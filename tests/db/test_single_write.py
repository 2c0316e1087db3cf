"""write_one: one statement in a write transaction of its own, on SQLite below SQLAlchemy.

Checked on a SQLite file (the fast path), SQLite in memory and Postgres (the
ordinary path): the same rows and types come back, a failure is SQLAlchemy's
exception and writes nothing, the write takes its turn with the process's
other writers, and the engine's dispose closes the connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db import single_write
from runlane.db.engine import begin_read, begin_write, create_engine
from runlane.db.migrate import upgrade_async
from runlane.db.single_write import write_one
from runlane.db.tables import threads

pytestmark = pytest.mark.anyio

_INSERT = (
    insert(threads)
    .values(
        thread_id=bindparam("tid"),
        status="idle",
        metadata=bindparam("doc", type_=threads.c.metadata.type),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(threads.c.thread_id, threads.c.metadata, threads.c.created_at)
)
_SET = (
    update(threads)
    .where(threads.c.thread_id == bindparam("tid"))
    .values(status=bindparam("status"))
)


@pytest.fixture(params=["file", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # Resolved synchronously: the Postgres URL fixture runs its own event loop.
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    if request.param == "file":
        return f"sqlite+aiosqlite:///{tmp_path / 'single.db'}"
    return "sqlite+aiosqlite:///:memory:"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade_async(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _status(engine: AsyncEngine, thread_id: str) -> str | None:
    async with begin_read(engine) as conn:
        found = await conn.scalar(select(threads.c.status).where(threads.c.thread_id == thread_id))
    return found


async def test_rows_come_back_with_their_column_types(engine: AsyncEngine) -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
    result = await write_one(engine, _INSERT, {"tid": "t1", "doc": {"a": [1, "x"]}, "now": now})

    assert result.rowcount == 1
    [row] = result.rows
    assert row["thread_id"] == "t1"
    assert row["metadata"] == {"a": [1, "x"]}
    assert isinstance(row["created_at"], datetime)
    assert row["created_at"].replace(tzinfo=UTC) == now
    changed = await write_one(engine, _SET, {"tid": "t1", "status": "busy"})
    assert (changed.rowcount, changed.rows) == (1, [])
    assert await _status(engine, "t1") == "busy"
    missing = await write_one(engine, _SET, {"tid": "nope", "status": "busy"})
    assert missing.rowcount == 0


async def test_values_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    path = tmp_path / "stored.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade_async(engine)
        now = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
        values = {"doc": {"k": "v"}, "now": now}
        await write_one(engine, _INSERT, {"tid": "below", **values})
        async with begin_write(engine) as conn:
            await conn.execute(_INSERT, {"tid": "through", **values})
    finally:
        await engine.dispose()
    with closing(sqlite3.connect(path)) as raw:
        stored = raw.execute(
            "SELECT thread_id, metadata, created_at, updated_at FROM threads ORDER BY thread_id"
        ).fetchall()
    below, through = stored
    assert below[1:] == through[1:]


async def test_a_failure_is_sqlalchemys_error_and_writes_nothing(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await write_one(engine, _INSERT, {"tid": "t1", "doc": {}, "now": now})

    with pytest.raises(IntegrityError) as raised:
        await write_one(engine, _INSERT, {"tid": "t1", "doc": {"b": 2}, "now": now})
    if engine.dialect.name == "sqlite":
        assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    # Rolled back, and no transaction is left open: other writers go on at once.
    async with begin_write(engine) as conn:
        await conn.execute(update(threads).values(status="interrupted"))
    assert await _status(engine, "t1") == "interrupted"
    assert (await write_one(engine, _SET, {"tid": "t1", "status": "idle"})).rowcount == 1


async def test_a_single_write_waits_for_the_turn_of_an_open_transaction(
    engine: AsyncEngine,
) -> None:
    await write_one(engine, _INSERT, {"tid": "t1", "doc": {}, "now": datetime.now(UTC)})
    inside, release = asyncio.Event(), asyncio.Event()

    async def long_transaction() -> None:
        async with begin_write(engine) as conn:
            await conn.execute(update(threads).values(status="busy"))
            inside.set()
            await release.wait()

    holder = asyncio.create_task(long_transaction())
    await inside.wait()
    single = asyncio.create_task(write_one(engine, _SET, {"tid": "t1", "status": "error"}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not single.done()
    release.set()
    await holder
    assert (await single).rowcount == 1
    assert await _status(engine, "t1") == "error"


async def test_a_missing_parameter_is_refused_before_anything_runs(engine: AsyncEngine) -> None:
    with pytest.raises(StatementError, match="'status'"):
        await write_one(engine, _SET, {"tid": "t1"})
    with pytest.raises(StatementError):
        await write_one(engine, _INSERT, {"tid": "t1", "doc": {}})
    async with begin_read(engine) as conn:
        assert await conn.scalar(select(threads.c.thread_id)) is None


async def test_an_expanding_in_list_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'in.db'}")
    try:
        await upgrade_async(engine)
        statement = (
            update(threads).where(threads.c.status.in_(["idle", "busy"])).values(status="error")
        )
        with pytest.raises(ValueError, match="IN list"):
            await write_one(engine, statement, {})
    finally:
        await engine.dispose()


async def test_dispose_closes_the_connection_of_single_writes(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'closed.db'}")
    await upgrade_async(engine)
    await write_one(engine, _INSERT, {"tid": "t1", "doc": {}, "now": datetime.now(UTC)})
    writer = single_write._WRITERS[engine.sync_engine]
    connection = await writer.connection()

    await engine.dispose()

    assert connection._connection is None  # aiosqlite's handle: closed
    assert not connection._thread.is_alive() or connection._tx.empty()
