"""RunManager persistence: retries by error type, row recreation, conflicts, bad input.

The retry tests raise exceptions of the real drivers' types (a real
``SQLITE_BUSY`` from sqlite3, asyncpg's SQLSTATE classes, SQLAlchemy's
wrappers) from a store method and count the attempts the manager makes. Which
types are transient is decided in ``runlane.runtime.runs.retry`` and tested
there against the drivers; here we check that the manager goes through it.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from runlane.exceptions import (
    InvalidPayloadError,
    InvalidStatusError,
    InvalidThreadIdError,
    StoreUnavailableError,
)
from runlane.runtime import RunManager, RunStatus
from runlane.runtime.runs.manager import PersistenceRetryPolicy
from runlane.runtime.runs.store.base import RunStore
from runlane.runtime.runs.store.memory import MemoryRunStore
from tests.runtime.runs._manager_support import (
    STORE_KINDS,
    CallCountingStore,
    resolve_store_url,
)

pytestmark = pytest.mark.anyio

NO_WAIT = PersistenceRetryPolicy(max_attempts=4, initial_delay=0, max_delay=0)


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest) -> str | None:
    return resolve_store_url(request)


# -- real driver errors ---------------------------------------------------------------


def _sqlite_busy(tmp_path: Path) -> sqlite3.OperationalError:
    """A genuine SQLITE_BUSY: a second connection writes while the first holds the lock."""
    path = tmp_path / f"locked-{uuid.uuid4().hex}.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("INSERT INTO t VALUES (1)")
    finally:
        other.close()
        holder.close()
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    return caught.value


def _sqlite_error(sql: str) -> sqlite3.Error:
    """A genuine permanent SQLite error from running ``sql`` on a fresh database."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x INTEGER NOT NULL)")
        with pytest.raises(sqlite3.Error) as caught:
            conn.execute(sql)
    finally:
        conn.close()
    return caught.value


STATEMENT = "UPDATE runs SET status = :status WHERE run_id = :run_id"


def _transient(kind: str, tmp_path: Path) -> BaseException:
    if kind == "sqlite-busy":
        return _sqlite_busy(tmp_path)
    if kind == "sqlite-busy-via-sqlalchemy":
        return OperationalError(STATEMENT, {}, _sqlite_busy(tmp_path))
    if kind == "pg-serialization-40001":
        return DBAPIError(STATEMENT, {}, asyncpg.SerializationError("could not serialize access"))
    if kind == "pg-deadlock-40P01":
        return asyncpg.DeadlockDetectedError("deadlock detected")
    if kind == "pg-connection-lost":
        return asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )
    if kind == "socket-reset":
        return ConnectionResetError(104, "Connection reset by peer")
    raise AssertionError(kind)


def _permanent(kind: str, tmp_path: Path) -> BaseException:
    if kind == "sqlite-no-such-table":
        return OperationalError(STATEMENT, {}, _sqlite_error("SELECT * FROM missing"))
    if kind == "sqlite-not-null":
        return IntegrityError(STATEMENT, {}, _sqlite_error("INSERT INTO t VALUES (NULL)"))
    if kind == "pg-undefined-table-42P01":
        missing = asyncpg.UndefinedTableError('relation "runs" does not exist')
        return ProgrammingError(STATEMENT, {}, missing)
    if kind == "pg-unique-violation-23505":
        return asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
    if kind == "lock-message-on-a-non-driver-error":
        # Only the text looks transient: classification is by type, not message.
        return RuntimeError("database is locked")
    raise AssertionError(kind)


TRANSIENT_KINDS = [
    "sqlite-busy",
    "sqlite-busy-via-sqlalchemy",
    "pg-serialization-40001",
    "pg-deadlock-40P01",
    "pg-connection-lost",
    "socket-reset",
]
PERMANENT_KINDS = [
    "sqlite-no-such-table",
    "sqlite-not-null",
    "pg-undefined-table-42P01",
    "pg-unique-violation-23505",
    "lock-message-on-a-non-driver-error",
]


class FailingWrites(MemoryRunStore):
    """Raises queued errors from one write method, counting every attempt."""

    def __init__(self, method: str, errors: list[BaseException]) -> None:
        super().__init__()
        self.method = method
        self.errors = errors
        self.attempts = 0

    def _maybe_fail(self, method: str) -> None:
        if method != self.method:
            return
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)

    async def admit(self, run_id: str, *, thread_id: str, strategy: Any, **fields: Any) -> Any:
        self._maybe_fail("admit")
        return await super().admit(run_id, thread_id=thread_id, strategy=strategy, **fields)

    async def update_status(self, run_id: str, status: str, *, error: str | None = None) -> bool:
        self._maybe_fail("update_status")
        return await super().update_status(run_id, status, error=error)


# -- retries (manager level) -------------------------------------------------------------


@pytest.mark.parametrize("kind", TRANSIENT_KINDS)
async def test_a_transient_status_write_error_is_retried(kind: str, tmp_path: Path) -> None:
    store = FailingWrites("update_status", [_transient(kind, tmp_path) for _ in range(2)])
    manager = RunManager(store, persistence_retry_policy=NO_WAIT)
    run = await manager.create_or_reject("conv-1")

    assert await manager.set_status(run.run_id, RunStatus.error, error="kaput") is True

    assert store.attempts == 3
    row = await store.get(run.run_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("error", "kaput")
    await manager.close()


@pytest.mark.parametrize("kind", PERMANENT_KINDS)
async def test_a_permanent_status_write_error_is_not_retried(kind: str, tmp_path: Path) -> None:
    store = FailingWrites("update_status", [_permanent(kind, tmp_path) for _ in range(4)])
    manager = RunManager(store, persistence_retry_policy=NO_WAIT)
    run = await manager.create_or_reject("conv-1")

    assert await manager.set_status(run.run_id, RunStatus.error, error="kaput") is False

    assert store.attempts == 1
    row = await store.get(run.run_id)
    assert row is not None
    assert row["status"] == "pending"
    await manager.close()


async def test_a_transient_error_that_persists_gives_up_after_the_policy_attempts(
    tmp_path: Path,
) -> None:
    errors = [_transient("sqlite-busy", tmp_path) for _ in range(10)]
    store = FailingWrites("update_status", errors)
    policy = PersistenceRetryPolicy(max_attempts=3, initial_delay=0, max_delay=0)
    manager = RunManager(store, persistence_retry_policy=policy)
    run = await manager.create_or_reject("conv-1")

    assert await manager.set_status(run.run_id, RunStatus.success) is False

    assert store.attempts == 3
    await manager.close()


@pytest.mark.parametrize("kind", ["sqlite-busy", "pg-serialization-40001", "pg-deadlock-40P01"])
async def test_a_transient_admission_error_is_retried(kind: str, tmp_path: Path) -> None:
    store = FailingWrites("admit", [_transient(kind, tmp_path) for _ in range(2)])
    manager = RunManager(store, persistence_retry_policy=NO_WAIT)

    run = await manager.create_or_reject("conv-1")

    assert store.attempts == 3
    assert await store.get(run.run_id) is not None
    assert manager.local_run_count == 1
    await manager.close()


@pytest.mark.parametrize("kind", ["sqlite-no-such-table", "lock-message-on-a-non-driver-error"])
async def test_a_permanent_admission_error_is_not_retried_and_admits_nothing(
    kind: str, tmp_path: Path
) -> None:
    store = FailingWrites("admit", [_permanent(kind, tmp_path)])
    manager = RunManager(store, persistence_retry_policy=NO_WAIT)

    with pytest.raises(StoreUnavailableError):
        await manager.create_or_reject("conv-1")

    assert store.attempts == 1
    assert manager.local_run_count == 0
    assert await store.list_by_thread("conv-1") == []


async def test_admission_gives_up_after_the_policy_attempts(tmp_path: Path) -> None:
    store = FailingWrites("admit", [_transient("socket-reset", tmp_path) for _ in range(10)])
    policy = PersistenceRetryPolicy(max_attempts=2, initial_delay=0, max_delay=0)
    manager = RunManager(store, persistence_retry_policy=policy)

    with pytest.raises(StoreUnavailableError):
        await manager.create_or_reject("conv-1")

    assert store.attempts == 2
    assert manager.local_run_count == 0


# -- row recreation and conflicts ---------------------------------------------------------


async def test_a_lost_row_is_recreated_by_the_status_write(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject(
        "conv-1", "planner", user_id="alice", metadata={"trace": "t-1"}, model_name="m"
    )
    await manager.set_status(run.run_id, RunStatus.running)
    assert await store.delete(run.run_id) is True

    assert await manager.set_status(run.run_id, RunStatus.error, error="lost and found") is True

    row = await store.get(run.run_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("error", "lost and found")
    assert (row["thread_id"], row["assistant_id"], row["user_id"]) == ("conv-1", "planner", "alice")
    assert row["metadata"] == {"trace": "t-1"}
    assert row["model_name"] == "m"


async def test_a_lost_row_is_recreated_by_the_completion_write(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1", "planner")
    await manager.set_status(run.run_id, RunStatus.running)
    await manager.set_status(run.run_id, RunStatus.success)
    assert await store.delete(run.run_id) is True

    written = await manager.update_run_completion(
        run.run_id,
        status="success",
        total_tokens=77,
        llm_call_count=4,
        message_count=6,
        token_usage_by_model={"m": {"in": 50, "out": 27}},
        last_ai_message="all done",
    )

    assert written is True
    row = await store.get(run.run_id)
    assert row is not None
    assert row["status"] == "success"
    assert (row["total_tokens"], row["llm_call_count"], row["message_count"]) == (77, 4, 6)
    assert row["token_usage_by_model"] == {"m": {"in": 50, "out": 27}}
    assert row["last_ai_message"] == "all done"
    assert row["assistant_id"] == "planner"


async def test_completion_statistics_land_on_an_existing_row(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.running)

    assert (
        await manager.update_run_completion(
            run.run_id, status="success", total_tokens=5, first_human_message="hi"
        )
        is True
    )

    assert run.status is RunStatus.success
    assert run.total_tokens == 5
    row = await store.get(run.run_id)
    assert row is not None
    assert (row["status"], row["total_tokens"], row["first_human_message"]) == ("success", 5, "hi")


async def test_a_status_write_loses_to_a_different_terminal_status_in_the_store(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.running)
    # Another writer (say, a process that recovered the run) got there first.
    assert await store.update_status(run.run_id, "success") is True

    assert await manager.set_status(run.run_id, RunStatus.error, error="late") is False

    row = await store.get(run.run_id)
    assert row is not None
    assert row["status"] == "success"
    assert row["error"] is None


async def test_a_completion_write_loses_to_a_different_terminal_status_in_the_store(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.running)
    assert await store.update_status(run.run_id, "error", error="recovered elsewhere") is True

    written = await manager.update_run_completion(run.run_id, status="success", total_tokens=9)

    assert written is False
    row = await store.get(run.run_id)
    assert row is not None
    assert (row["status"], row["error"], row["total_tokens"]) == ("error", "recovered elsewhere", 0)


async def test_a_completion_write_that_keeps_missing_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NeverMatches(MemoryRunStore):
        def __init__(self) -> None:
            super().__init__()
            self.completion_calls = 0

        async def update_run_completion(self, run_id: str, *, status: str, **stats: Any) -> bool:
            self.completion_calls += 1
            return False

    store = NeverMatches()
    manager = RunManager(store)
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.success)
    caplog.set_level(logging.WARNING, logger="runlane")

    written = await manager.update_run_completion(run.run_id, status="success", total_tokens=1)

    assert written is False

    assert store.completion_calls == 2
    assert any(
        r.levelno == logging.WARNING and run.run_id in r.getMessage() for r in caplog.records
    )
    await manager.close()


# -- bad input: typed errors, nothing written -------------------------------------------


@pytest.mark.parametrize(
    "thread_id",
    ["", " ", "has space", "x" * 65, "../etc/passwd", "thread/1", "tëst", "a\nb", None, 42],
)
async def test_a_malformed_thread_id_is_refused_before_any_write(thread_id: Any) -> None:
    store = CallCountingStore()
    manager = RunManager(store)

    with pytest.raises(InvalidThreadIdError):
        await manager.create_or_reject(thread_id)
    with pytest.raises(InvalidThreadIdError):
        await manager.create(thread_id)
    with pytest.raises(InvalidThreadIdError):
        await manager.create_or_reject(thread_id, multitask_strategy="enqueue")

    assert store.writes() == 0
    assert manager.local_run_count == 0


async def test_the_longest_well_formed_thread_id_is_accepted() -> None:
    manager = RunManager(MemoryRunStore())
    run = await manager.create_or_reject("A-z_0" + "9" * 59)
    assert len(run.thread_id) == 64
    await manager.close()


@pytest.mark.parametrize("status", ["finished", "SUCCESS", "", "done ", None, 3])
async def test_an_unknown_status_is_refused_before_any_write(status: Any) -> None:
    store = CallCountingStore()
    manager = RunManager(store)
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.running)
    writes = store.writes()
    before = await store.get(run.run_id)

    with pytest.raises(InvalidStatusError):
        await manager.set_status(run.run_id, status)
    with pytest.raises(InvalidStatusError):
        await manager.update_run_completion(run.run_id, status=status, total_tokens=3)

    assert store.writes() == writes
    assert await store.get(run.run_id) == before
    assert run.status is RunStatus.running
    assert run.total_tokens == 0
    await manager.close()


@pytest.mark.parametrize(
    "metadata",
    [
        {"handle": object()},
        {"tags": {"a", "b"}},
        {"deep": {"deeper": [1, object()]}},
        {1: "an int key"},
        {"raw": b"\x00bytes"},
    ],
    ids=["object", "set", "nested-object", "int-key", "bytes"],
)
async def test_metadata_that_is_not_json_is_refused_before_any_write(
    metadata: dict[Any, Any],
) -> None:
    store = CallCountingStore()
    manager = RunManager(store)

    with pytest.raises(InvalidPayloadError):
        await manager.create_or_reject("conv-1", metadata=metadata)
    with pytest.raises(InvalidPayloadError):
        await manager.create("conv-1", metadata=metadata)

    assert store.writes() == 0
    assert manager.local_run_count == 0
    assert await store.list_by_thread("conv-1") == []


async def test_kwargs_that_are_not_json_are_refused_before_any_write() -> None:
    store = CallCountingStore()
    manager = RunManager(store)

    with pytest.raises(InvalidPayloadError):
        await manager.create_or_reject("conv-1", kwargs={"input": {"file": object()}})

    assert store.writes() == 0
    assert manager.local_run_count == 0


async def test_bad_input_on_a_busy_thread_does_not_disturb_the_active_run() -> None:
    store = CallCountingStore()
    manager = RunManager(store)
    active = await manager.create_or_reject("conv-1")
    writes = store.writes()

    with pytest.raises(InvalidPayloadError):
        await manager.create_or_reject(
            "conv-1", multitask_strategy="interrupt", metadata={"x": object()}
        )

    assert store.writes() == writes
    assert active.status is RunStatus.pending
    assert not active.abort_event.is_set()
    await manager.close()
