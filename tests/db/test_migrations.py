"""The Alembic migrations: they build the schema of ``runlane.db.tables``, on both databases.

Checked on a fresh SQLite file and on a fresh Postgres database (downgraded
to empty first): the tables and the lane index exist and behave, upgrading
twice changes nothing, downgrading removes everything, and the migrated
schema matches the table definitions the store is written against.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db import migrate
from runlane.db.engine import create_engine
from runlane.db.tables import LANE_INDEX, metadata, runs
from runlane.exceptions import MigrationError
from runlane.runtime.runs.retry import is_unique_violation

pytestmark = pytest.mark.anyio

HEAD = migrate.HEAD


def test_head_names_the_newest_migration() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.HEAD]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no runlane tables (a migrated Postgres clone is emptied)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("postgres_url")
    migrate.downgrade(url, "base")
    return url


@pytest.fixture
async def engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _inspect(engine: AsyncEngine, fn: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: fn(inspect(sync)))


async def _version(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def test_upgrade_creates_tables_and_indexes(engine: AsyncEngine) -> None:
    assert "runs" not in await _inspect(engine, lambda i: i.get_table_names())

    await migrate.upgrade_async(engine)

    tables = set(await _inspect(engine, lambda i: i.get_table_names()))
    assert {
        "runs",
        "threads",
        "assistants",
        "assistant_versions",
        "run_events",
        "event_seq",
        "alembic_version",
    } <= tables
    columns = {c["name"] for c in await _inspect(engine, lambda i: i.get_columns("runs"))}
    assert columns == {c.name for c in runs.columns}
    indexes = {ix["name"]: ix for ix in await _inspect(engine, lambda i: i.get_indexes("runs"))}
    assert {
        "ix_runs_thread_id_status",
        "ix_runs_lease_expires_at",
        "ix_runs_user_id",
        LANE_INDEX,
    } <= set(indexes)
    lane = indexes[LANE_INDEX]
    assert lane["unique"]
    assert lane["column_names"] == ["thread_id"]
    where = str(lane["dialect_options"][f"{engine.dialect.name}_where"]).lower()
    assert "pending" in where
    assert "running" in where
    assert "queued" in where
    assert await _version(engine) == HEAD


async def test_lane_index_allows_one_holder_per_thread(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)

    def row(run_id: str, thread_id: str, status: str, queued: bool = False) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "thread_id": thread_id,
            "status": status,
            "queued": queued,
            "metadata": {},
            "kwargs": {},
            "token_usage_by_model": {},
            "created_at": text("CURRENT_TIMESTAMP"),
            "updated_at": text("CURRENT_TIMESTAMP"),
        }

    async with engine.begin() as conn:
        for values in (
            row("holder", "t1", "running"),
            row("waiter", "t1", "pending", queued=True),
            row("done", "t1", "success"),
            row("other", "t2", "pending"),
        ):
            await conn.execute(insert(runs).values(values))
    with pytest.raises(IntegrityError) as caught:
        async with engine.begin() as conn:
            await conn.execute(insert(runs).values(row("second", "t1", "pending")))

    assert is_unique_violation(caught.value)


async def test_upgrade_is_idempotent(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)
    await migrate.upgrade_async(engine)

    assert await _version(engine) == HEAD
    assert len(await _inspect(engine, lambda i: i.get_indexes("runs"))) >= 5


async def test_downgrade_removes_everything(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)

    await migrate.downgrade_async(engine, "base")

    tables = set(await _inspect(engine, lambda i: i.get_table_names()))
    every = {"runs", "threads", "assistants", "assistant_versions", "run_events", "event_seq"}
    assert not every & tables
    assert await _version(engine) is None
    await migrate.upgrade_async(engine)  # and back up again
    assert await _version(engine) == HEAD


async def test_downgrade_to_0001_drops_only_the_assistant_tables(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)

    await migrate.downgrade_async(engine, "0001")

    tables = set(await _inspect(engine, lambda i: i.get_table_names()))
    assert {"runs", "threads"} <= tables
    assert not {"assistants", "assistant_versions", "run_events", "event_seq"} & tables
    assert await _version(engine) == "0001"


async def test_downgrade_to_0002_drops_only_the_event_tables(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)

    await migrate.downgrade_async(engine, "0002")

    tables = set(await _inspect(engine, lambda i: i.get_table_names()))
    assert {"runs", "threads", "assistants", "assistant_versions"} <= tables
    assert not {"run_events", "event_seq"} & tables
    assert await _version(engine) == "0002"


async def test_event_singleton_index_is_partial(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)
    indexes = {
        ix["name"]: ix for ix in await _inspect(engine, lambda i: i.get_indexes("run_events"))
    }
    singleton = indexes["uq_run_events_singleton"]
    assert singleton["unique"]
    assert singleton["column_names"] == ["run_id", "event_type"]
    assert "singleton" in str(singleton["dialect_options"][f"{engine.dialect.name}_where"])


async def test_migrated_schema_matches_tables_module(engine: AsyncEngine) -> None:
    await migrate.upgrade_async(engine)

    def diff(sync: Connection) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def test_sync_upgrade_from_a_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"

    migrate.upgrade(url)
    migrate.upgrade(url)
    migrate.downgrade(url)
    migrate.upgrade(url, "0001")

    with closing(sqlite3.connect(tmp_path / "sync.db")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_current_revisions_of_an_empty_and_a_migrated_database(
    engine: AsyncEngine,
) -> None:
    assert await migrate.current_revisions(engine) == set()
    await migrate.upgrade_async(engine, "0002")
    assert await migrate.current_revisions(engine) == {"0002"}
    await migrate.upgrade_async(engine)
    assert await migrate.current_revisions(engine) == {HEAD}


async def test_upgrade_in_child_migrates_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'child.db'}"
    engine = create_engine(url)
    try:
        await migrate.upgrade_in_child(engine, url)
        assert await migrate.current_revisions(engine) == {HEAD}
        assert "runs" in await _inspect(engine, lambda i: i.get_table_names())
    finally:
        await engine.dispose()


async def test_upgrade_in_child_starts_no_child_for_a_current_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'current.db'}"
    engine = create_engine(url)
    try:
        await migrate.upgrade_async(engine)

        async def no_child(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"a child was started: {args}")

        monkeypatch.setattr(migrate.asyncio, "create_subprocess_exec", no_child)
        await migrate.upgrade_in_child(engine, url)
        assert await migrate.current_revisions(engine) == {HEAD}
    finally:
        await engine.dispose()


async def test_a_failed_child_migration_raises_with_alembics_words(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unknown.db'}"
    with closing(sqlite3.connect(tmp_path / "unknown.db")) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")
        conn.commit()
    engine = create_engine(url)
    try:
        with pytest.raises(MigrationError, match="exited with 1") as raised:
            await migrate.upgrade_in_child(engine, url)
        assert "9999" in raised.value.message
        assert await migrate.current_revisions(engine) == {"9999"}
    finally:
        await engine.dispose()
