"""Transient versus permanent store errors, with the real drivers' exceptions.

Every transient class is produced for real (a held SQLite write lock, two
SERIALIZABLE transactions, a deadlock, a terminated backend, a refused
connection) and classified both raw and as SQLAlchemy wraps it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import create_engine
from runlane.runtime.runs.retry import (
    PersistenceRetryPolicy,
    call_with_retry,
    is_transient,
    is_unique_violation,
)

pytestmark = pytest.mark.anyio


def _driver_error(exc: BaseException, kind: type[BaseException]) -> Any:
    """The driver exception of type ``kind`` that ``exc`` wraps (or is)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if isinstance(current, kind):
            return current
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    raise AssertionError(f"{exc!r} does not wrap a {kind.__name__}")


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    # busy_timeout=0: a held lock fails at once instead of after a wait.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=0)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE k (id INTEGER PRIMARY KEY, v INTEGER)"))
        await conn.execute(text("INSERT INTO k VALUES (1, 0)"))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE k (id INTEGER PRIMARY KEY, v INTEGER)"))
        await conn.execute(text("INSERT INTO k VALUES (1, 0), (2, 0)"))
    try:
        yield engine
    finally:
        await engine.dispose()


def _hold_write_lock(engine: AsyncEngine) -> sqlite3.Connection:
    path = engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


# --- SQLite -------------------------------------------------------------------


async def test_sqlite_busy_is_transient(sqlite_engine: AsyncEngine) -> None:
    holder = _hold_write_lock(sqlite_engine)
    try:
        with pytest.raises(OperationalError) as caught:
            async with sqlite_engine.begin() as conn:
                await conn.execute(text("UPDATE k SET v = v + 1"))
    finally:
        holder.close()

    raw = _driver_error(caught.value, sqlite3.OperationalError)
    assert isinstance(raw, sqlite3.OperationalError)
    assert raw.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    assert is_transient(caught.value) is True
    assert is_transient(raw) is True


def test_sqlite_locked_is_transient(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "locked.db")
    conn.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);")
    pending = conn.execute("SELECT x FROM t")
    pending.fetchone()  # the statement stays open and keeps the table in use
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("DROP TABLE t")
    conn.close()

    assert caught.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_LOCKED
    assert is_transient(caught.value) is True


def test_hand_built_sqlite_lock_errors_fall_back_to_the_message() -> None:
    assert is_transient(sqlite3.OperationalError("database is locked")) is True
    assert is_transient(sqlite3.OperationalError("database table is locked")) is True
    assert is_transient(sqlite3.OperationalError("database is busy")) is True
    # Only OperationalError gets the fallback; the text alone decides nothing.
    assert is_transient(sqlite3.DatabaseError("database is locked")) is False
    assert is_transient(RuntimeError("database is locked")) is False
    assert is_transient(sqlite3.OperationalError("no such table: runs")) is False


async def test_sqlite_permanent_errors(sqlite_engine: AsyncEngine) -> None:
    statements = {
        "no such table": "SELECT * FROM missing",
        "syntax error": "SELEC 1",
        "UNIQUE constraint failed": "INSERT INTO k VALUES (1, 0)",
    }
    for message, statement in statements.items():
        with pytest.raises(DBAPIError, match=message) as caught:
            async with sqlite_engine.begin() as conn:
                await conn.execute(text(statement))
        assert is_transient(caught.value) is False, statement
        assert is_unique_violation(caught.value) is (message == "UNIQUE constraint failed")


async def test_call_with_retry_outlasts_a_real_sqlite_lock(sqlite_engine: AsyncEngine) -> None:
    holder = _hold_write_lock(sqlite_engine)
    delays: list[float] = []

    async def release_on_second_wait(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 2:
            holder.rollback()

    async def bump() -> int:
        async with sqlite_engine.begin() as conn:
            await conn.execute(text("UPDATE k SET v = v + 1"))
            return int((await conn.execute(text("SELECT v FROM k"))).scalar_one())

    try:
        value = await call_with_retry(PersistenceRetryPolicy(), bump, sleep=release_on_second_wait)
    finally:
        holder.close()

    assert value == 1
    assert delays == [0.05, 0.1]


# --- Postgres -------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_serialization_failure_is_transient(pg_engine: AsyncEngine) -> None:
    async with pg_engine.connect() as first, pg_engine.connect() as second:
        for conn in (first, second):
            await conn.execution_options(isolation_level="SERIALIZABLE")
            await conn.execute(text("SELECT v FROM k WHERE id = 1"))
        await first.execute(text("UPDATE k SET v = 1 WHERE id = 1"))
        await first.commit()
        with pytest.raises(DBAPIError) as caught:
            await second.execute(text("UPDATE k SET v = 2 WHERE id = 1"))
        await second.rollback()

    raw = _driver_error(caught.value, asyncpg.SerializationError)
    assert raw.sqlstate == "40001"
    assert is_transient(caught.value) is True
    assert is_transient(raw) is True


@pytest.mark.postgres
async def test_postgres_deadlock_is_transient(pg_engine: AsyncEngine) -> None:
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def worker(mine: int, other: int, locked: asyncio.Event, wait: asyncio.Event) -> None:
        async with pg_engine.begin() as conn:
            # Detect the deadlock quickly; the cycle is formed either way.
            await conn.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await conn.execute(text("UPDATE k SET v = v + 1 WHERE id = :id"), {"id": mine})
            locked.set()
            await wait.wait()
            await conn.execute(text("UPDATE k SET v = v + 1 WHERE id = :id"), {"id": other})

    outcomes = await asyncio.gather(
        worker(1, 2, first_locked, second_locked),
        worker(2, 1, second_locked, first_locked),
        return_exceptions=True,
    )

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    raw = _driver_error(errors[0], asyncpg.DeadlockDetectedError)
    assert raw.sqlstate == "40P01"
    assert is_transient(errors[0]) is True


@pytest.mark.postgres
async def test_postgres_lost_connection_is_transient(
    pg_engine: AsyncEngine, postgres_url: str
) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    raw_victim = await asyncpg.connect(dsn)
    try:
        async with pg_engine.connect() as victim:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            raw_pid = await raw_victim.fetchval("SELECT pg_backend_pid()")
            for target in (pid, raw_pid):
                assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", target)
            with pytest.raises(DBAPIError) as wrapped:
                await victim.execute(text("SELECT 1"))
        with pytest.raises(Exception) as raw:  # noqa: PT011 - the driver picks the class
            await raw_victim.fetchval("SELECT 1")
    finally:
        await admin.close()
        await raw_victim.close()

    # Which class asyncpg raises depends on when it noticed the termination.
    assert isinstance(
        raw.value,
        asyncpg.ConnectionDoesNotExistError | asyncpg.AdminShutdownError | asyncpg.InterfaceError,
    ), repr(raw.value)
    assert is_transient(raw.value) is True
    assert is_transient(wrapped.value) is True


@pytest.mark.postgres
async def test_asyncpg_misuse_is_permanent(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # Tasks start in creation order: `first` has sent its query and holds
        # the connection when `second` starts, in the same loop iteration.
        first = asyncio.ensure_future(conn.fetchval("SELECT 1"))
        second = asyncio.ensure_future(conn.fetchval("SELECT 2"))
        with pytest.raises(asyncpg.InterfaceError, match="another operation") as caught:
            await second
        assert await first == 1
    finally:
        await conn.close()

    assert is_transient(caught.value) is False


@pytest.mark.postgres
async def test_refused_connection_is_transient() -> None:
    with pytest.raises(ConnectionRefusedError) as caught:
        # Port 1 on loopback: nothing listens there, the kernel refuses at once.
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/test", timeout=5)
    assert is_transient(caught.value) is True
    assert is_transient(FileNotFoundError(2, "No such file")) is False


@pytest.mark.postgres
async def test_postgres_permanent_errors(pg_engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as syntax:
        async with pg_engine.connect() as conn:
            await conn.execute(text("SELEC 1"))
    with pytest.raises(IntegrityError) as unique:
        async with pg_engine.begin() as conn:
            await conn.execute(text("INSERT INTO k VALUES (1, 0)"))

    assert _driver_error(syntax.value, asyncpg.PostgresSyntaxError).sqlstate == "42601"
    assert _driver_error(unique.value, asyncpg.UniqueViolationError).sqlstate == "23505"
    assert is_transient(syntax.value) is False
    assert is_transient(unique.value) is False
    assert is_unique_violation(unique.value) is True
    assert is_unique_violation(syntax.value) is False


# --- the retry loop ---------------------------------------------------------------


class _Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, value: str, *, suffix: str) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return value + suffix


def _busy() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


async def test_retry_backs_off_and_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    flaky = _Flaky([_busy() for _ in range(4)])
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    policy = PersistenceRetryPolicy(max_attempts=5, initial_delay=0.1, max_delay=0.5)
    with caplog.at_level(logging.WARNING, logger="runlane.runtime.runs.retry"):
        result = await call_with_retry(policy, flaky, "a", suffix="b", sleep=record)

    assert (result, flaky.calls) == ("ab", 5)
    assert delays == [0.1, 0.2, 0.4, 0.5]
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 4


async def test_retry_gives_up_after_max_attempts() -> None:
    last = _busy()
    flaky = _Flaky([_busy(), _busy(), last])
    sleeps: list[float] = []

    async def record(delay: float) -> None:
        sleeps.append(delay)

    with pytest.raises(sqlite3.OperationalError) as caught:
        await call_with_retry(
            PersistenceRetryPolicy(max_attempts=3), flaky, "a", suffix="b", sleep=record
        )

    assert caught.value is last
    assert (flaky.calls, len(sleeps)) == (3, 2)


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.DatabaseError("no such table: runs"),
        ValueError("bad input"),
        DBAPIError("UPDATE runs", {}, sqlite3.DatabaseError("no such table: runs")),
    ],
)
async def test_retry_does_not_retry_permanent_errors(error: BaseException) -> None:
    flaky = _Flaky([error])

    async def never(delay: float) -> Any:
        raise AssertionError("slept for a permanent error")

    with pytest.raises(type(error)):
        await call_with_retry(PersistenceRetryPolicy(), flaky, "a", suffix="b", sleep=never)
    assert flaky.calls == 1


def test_policy_defaults_and_validation() -> None:
    policy = PersistenceRetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay, policy.backoff_factor) == (
        5,
        0.05,
        1.0,
        2.0,
    )
    assert [policy.delay(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    with pytest.raises(ValueError, match="max_attempts"):
        PersistenceRetryPolicy(max_attempts=0)
