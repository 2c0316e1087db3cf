"""ThreadStore.settle_status: the thread status after a run, busy while another run is active."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db import single_write
from runlane.db.engine import begin_write, create_engine
from runlane.db.tables import runs
from runlane.exceptions import InvalidThreadStatusError
from runlane.runtime.threads import MemoryThreadStore, SqlThreadStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    # Resolved synchronously: the URL fixtures run their own event loops.
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def add_run(engine: AsyncEngine, thread_id: str, run_id: str, status: str) -> None:
    now = datetime.now(UTC)
    async with begin_write(engine) as conn:
        await conn.execute(
            insert(runs).values(
                run_id=run_id, thread_id=thread_id, status=status, metadata={}, kwargs={},
                token_usage_by_model={}, created_at=now, updated_at=now,
            )
        )


async def set_run(engine: AsyncEngine, run_id: str, status: str) -> None:
    async with begin_write(engine) as conn:
        await conn.execute(update(runs).where(runs.c.run_id == run_id).values(status=status))


def never_called() -> Callable[[], Awaitable[bool]]:
    async def called() -> bool:
        raise AssertionError("the SQL store decides from the runs table")

    return called


async def test_sql_stores_the_status_or_busy_from_the_runs_table(engine: AsyncEngine) -> None:
    store = SqlThreadStore(engine)
    await store.create("t1")
    await add_run(engine, "t1", "r1", "success")
    await add_run(engine, "t2", "r9", "running")  # another thread's run does not count
    assert await store.settle_status("t1", "interrupted", has_active_run=never_called()) == (
        "interrupted"
    )
    assert (await store.get("t1") or {})["status"] == "interrupted"
    for active in ("pending", "running"):
        await add_run(engine, "t1", f"r-{active}", active)
        assert await store.settle_status("t1", "idle", has_active_run=never_called()) == "busy"
        assert (await store.get("t1") or {})["status"] == "busy"
        await set_run(engine, f"r-{active}", "success")
    assert await store.settle_status("t1", "error", has_active_run=never_called()) == "error"


async def test_sql_settle_is_one_statement(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlThreadStore(engine)
    await store.create("t1")
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    # SQLite file engines run single writes below SQLAlchemy (runlane.db.single_write).
    run_one = single_write._run_one

    def _seen_below(connection: Any, sql: str, values: Any) -> Any:
        statements.append(sql)
        return run_one(connection, sql, values)

    monkeypatch.setattr(single_write, "_run_one", _seen_below)
    await store.settle_status("t1", "idle", has_active_run=never_called())
    assert len(statements) == 1
    assert statements[0].lstrip().upper().startswith("UPDATE")


async def test_sql_missing_thread_and_bad_status(engine: AsyncEngine) -> None:
    store = SqlThreadStore(engine)
    assert await store.settle_status("nope", "idle", has_active_run=never_called()) is None
    await store.create("t1")
    with pytest.raises(InvalidThreadStatusError):
        await store.settle_status("t1", "sleeping", has_active_run=never_called())  # type: ignore[arg-type]
    assert (await store.get("t1") or {})["status"] == "idle"


async def test_sql_without_runs_in_the_database_asks_the_callback(engine: AsyncEngine) -> None:
    store = SqlThreadStore(engine, runs_in_database=False)
    await store.create("t1")
    await add_run(engine, "t1", "r1", "running")  # not consulted

    async def inactive() -> bool:
        return False

    assert await store.settle_status("t1", "idle", has_active_run=inactive) == "idle"


async def test_default_checks_before_and_after_writing() -> None:
    store = MemoryThreadStore()
    await store.create("t1")
    answers = [False, True]  # a run is admitted between the check and the write

    async def has_active_run() -> bool:
        return answers.pop(0)

    assert await store.settle_status("t1", "idle", has_active_run=has_active_run) == "busy"
    assert (await store.get("t1") or {})["status"] == "busy"
    assert answers == []

    async def active() -> bool:
        return True

    assert await store.settle_status("t1", "idle", has_active_run=active) == "busy"

    async def inactive() -> bool:
        return False

    assert await store.settle_status("t1", "interrupted", has_active_run=inactive) == (
        "interrupted"
    )
    assert await store.settle_status("gone", "idle", has_active_run=inactive) is None
