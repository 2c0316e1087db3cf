"""The checkpointer factory, and the checkpoint surgery rollback needs.

:func:`open_checkpointer` opens LangGraph's own savers: SQLite (a file of its
own, so checkpoint writes never contend with the run store's lock) or
Postgres (the server's database, through a psycopg pool).

Rollback. ``BaseCheckpointSaver.adelete_for_runs`` is declared by
langgraph-checkpoint 4 but neither the SQLite nor the Postgres saver
implements it (both raise NotImplementedError), and deleting a run's
checkpoints would not be enough anyway: a resume or a step cut short writes
pending writes onto the checkpoint the run *started from*, which predates
the run. So before a run starts, :func:`capture_rollback_point` copies the
raw pending-write rows of the root checkpoint it starts from; on rollback,
:func:`rollback_run` deletes, in one transaction, every checkpoint the run
wrote (all namespaces; they carry ``metadata.run_id``) with its writes, and
puts the start checkpoint's writes back exactly as they were (Postgres: blobs
no remaining checkpoint refers to are deleted too). A thread that had no
checkpoint before the run ends with none.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from runlane.db import sqlite_driver

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

__all__ = [
    "RollbackPoint",
    "capture_rollback_point",
    "open_checkpointer",
    "postgres_conninfo",
    "rollback_run",
]

# asyncpg-only query parameters that psycopg would reject.
_ASYNCPG_ONLY = {"prepared_statement_cache_size", "prepared_statement_name_func", "ssl"}


def postgres_conninfo(database_url: str) -> str:
    """The psycopg connection string for a SQLAlchemy Postgres URL (any driver)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    query = {k: v for k, v in url.query.items() if k not in _ASYNCPG_ONLY}
    if "ssl" in url.query and "sslmode" not in query:
        query["sslmode"] = url.query["ssl"]
    url = url.set(drivername="postgresql", query=query)
    return url.render_as_string(hide_password=False)


_SETUP_ATTEMPTS = 5
_POSTGRES_SAVER_MODULE = "langgraph.checkpoint.postgres.aio"


def _as_postgres(saver: BaseCheckpointSaver[Any]) -> AsyncPostgresSaver | None:
    """``saver`` if it is LangGraph's Postgres saver, else None.

    The saver (and psycopg under it, ~10 MB) is imported only when a
    Postgres checkpointer is opened; until its module is loaded no saver of
    its type can exist, so the embedded defaults never load it.
    """
    module = sys.modules.get(_POSTGRES_SAVER_MODULE)
    if module is not None and isinstance(saver, module.AsyncPostgresSaver):
        return cast("AsyncPostgresSaver", saver)
    return None


async def _set_up_racing_peers(saver: AsyncPostgresSaver) -> None:
    """``saver.setup()``, again when a process starting alongside created the same objects.

    The saver's migrations are idempotent, but two processes running them at
    once collide on catalog rows (a unique violation or a deadlock); the
    loser's next attempt finds the work done. (Serialising with an advisory
    lock instead would deadlock against its ``CREATE INDEX CONCURRENTLY``.)
    """
    from psycopg import errors

    racing = (
        errors.UniqueViolation,
        errors.DeadlockDetected,
        errors.DuplicateObject,
        errors.DuplicateTable,
    )
    for attempt in range(1, _SETUP_ATTEMPTS + 1):
        try:
            await saver.setup()
            return
        except racing:
            if attempt == _SETUP_ATTEMPTS:
                raise
            await asyncio.sleep(0.1 * attempt)


@asynccontextmanager
async def open_checkpointer(
    database_url: str, data_dir: Path
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the checkpointer for ``database_url``, tables created; closed on exit.

    SQLite URLs: ``AsyncSqliteSaver`` on ``<data_dir>/checkpoints.db``, over a
    :mod:`~runlane.db.sqlite_driver` connection (a statement is one call on
    its thread, not four) with ``synchronous=NORMAL`` (durability as the run
    store's: see :mod:`runlane.db.engine`).
    ``postgresql[+driver]://`` URLs: ``AsyncPostgresSaver`` over a psycopg
    pool (autocommit, ``prepare_threshold=0``, ``dict_row``, as the saver
    requires). Anything else raises ValueError.
    """
    scheme = database_url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        conn = await sqlite_driver.connect(str(data_dir / "checkpoints.db"))()
        try:
            saver = AsyncSqliteSaver(conn)
            await saver.setup()  # switches the file to WAL
            # As the run store's file: a commit survives a crash of the
            # process without an fsync of its own.
            await conn.execute("PRAGMA synchronous=NORMAL")
            yield saver
        finally:
            await conn.close()
        return
    if scheme.startswith(("postgresql", "postgres")):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            postgres_conninfo(database_url),
            min_size=1,
            max_size=10,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        await pool.open(wait=True)
        try:
            saver_pg = AsyncPostgresSaver(conn=pool)
            await _set_up_racing_peers(saver_pg)
            yield saver_pg
        finally:
            await pool.close()
        return
    raise ValueError(f"no checkpointer for database URL scheme {scheme!r}")


@dataclass(frozen=True)
class RollbackPoint:
    """A thread's root checkpoint before a run, with its pending writes' raw rows."""

    thread_id: str
    checkpoint_id: str | None
    writes: tuple[tuple[Any, ...], ...] = ()


_SQLITE_HEAD = (
    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)
_SQLITE_WRITES = (
    "SELECT task_id, task_path, idx, channel, type, value FROM writes "
    "WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?"
)
_SQLITE_RUN = "json_extract(CAST(metadata AS TEXT), '$.run_id') = ?"
_PG_HEAD = (
    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)
_PG_WRITES = (
    "SELECT task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
    "WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s"
)


def _unsupported(saver: BaseCheckpointSaver[Any]) -> NotImplementedError:
    return NotImplementedError(f"rollback is not supported for {type(saver).__name__}")


async def capture_rollback_point(
    saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None = None
) -> RollbackPoint:
    """Record where a run on ``thread_id`` starts (``checkpoint_id``: a fork; else the head)."""
    if isinstance(saver, AsyncSqliteSaver):
        await saver.setup()
        async with saver.lock:
            if checkpoint_id is None:
                async with saver.conn.execute(_SQLITE_HEAD, (thread_id,)) as cur:
                    row = await cur.fetchone()
                checkpoint_id = row[0] if row else None
            if checkpoint_id is None:
                return RollbackPoint(thread_id, None)
            async with saver.conn.execute(_SQLITE_WRITES, (thread_id, checkpoint_id)) as cur:
                rows = await cur.fetchall()
        return RollbackPoint(thread_id, checkpoint_id, tuple(tuple(r) for r in rows))
    pg_saver = _as_postgres(saver)
    if pg_saver is not None:
        async with pg_saver._cursor() as cur:
            if checkpoint_id is None:
                await cur.execute(_PG_HEAD, (thread_id,))
                head = await cur.fetchone()
                checkpoint_id = head["checkpoint_id"] if head else None
            if checkpoint_id is None:
                return RollbackPoint(thread_id, None)
            await cur.execute(_PG_WRITES, (thread_id, checkpoint_id))
            pg_rows = await cur.fetchall()
        return RollbackPoint(
            thread_id,
            checkpoint_id,
            tuple(
                (r["task_id"], r["task_path"], r["idx"], r["channel"], r["type"], r["blob"])
                for r in pg_rows
            ),
        )
    raise _unsupported(saver)


async def rollback_run(saver: BaseCheckpointSaver[Any], point: RollbackPoint, run_id: str) -> None:
    """Put the thread back where ``point`` found it, undoing run ``run_id``. Atomic."""
    if point.checkpoint_id is None:
        await saver.adelete_thread(point.thread_id)
        return
    if isinstance(saver, AsyncSqliteSaver):
        await _rollback_sqlite(saver, point, run_id)
        return
    pg_saver = _as_postgres(saver)
    if pg_saver is None:
        raise _unsupported(saver)
    await _rollback_postgres(pg_saver, point, run_id)


async def _rollback_sqlite(saver: AsyncSqliteSaver, point: RollbackPoint, run_id: str) -> None:
    tid, cid = point.thread_id, point.checkpoint_id
    statements: Sequence[tuple[str, tuple[Any, ...]]] = (
        (
            "DELETE FROM writes WHERE thread_id = ? AND (checkpoint_ns, checkpoint_id) IN "
            f"(SELECT checkpoint_ns, checkpoint_id FROM checkpoints "
            f"WHERE thread_id = ? AND {_SQLITE_RUN})",
            (tid, tid, run_id),
        ),
        (f"DELETE FROM checkpoints WHERE thread_id = ? AND {_SQLITE_RUN}", (tid, run_id)),
        (
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (tid, cid),
        ),
    )
    async with saver.lock:
        try:
            for sql, params in statements:
                await saver.conn.execute(sql, params)
            await saver.conn.executemany(
                "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                "task_path, idx, channel, type, value) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?)",
                [(tid, cid, *row) for row in point.writes],
            )
            await saver.conn.commit()
        except BaseException:
            await saver.conn.rollback()
            raise


async def _rollback_postgres(saver: AsyncPostgresSaver, point: RollbackPoint, run_id: str) -> None:
    tid, cid = point.thread_id, point.checkpoint_id
    async with saver._cursor() as cur, cur.connection.transaction():
        await cur.execute(
            "DELETE FROM checkpoint_writes WHERE thread_id = %s AND "
            "(checkpoint_ns, checkpoint_id) IN (SELECT checkpoint_ns, checkpoint_id "
            "FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s)",
            (tid, tid, run_id),
        )
        await cur.execute(
            "DELETE FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s",
            (tid, run_id),
        )
        await cur.execute(
            "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = '' "
            "AND checkpoint_id = %s",
            (tid, cid),
        )
        if point.writes:
            await cur.executemany(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, "
                "task_id, task_path, idx, channel, type, blob) "
                "VALUES (%s, '', %s, %s, %s, %s, %s, %s, %s)",
                [(tid, cid, *row) for row in point.writes],
            )
        # Blob versions carry a random suffix, so leftovers never collide with a
        # later run's; they are garbage all the same.
        await cur.execute(
            "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %s AND NOT EXISTS ("
            "SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id "
            "AND c.checkpoint_ns = b.checkpoint_ns "
            "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
            (tid,),
        )
