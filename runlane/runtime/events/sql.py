"""SqlEventStore: the event log in ``run_events`` (SQLite or Postgres).

How the guarantees of :mod:`runlane.runtime.events.base` are kept:

- **seq.** Each thread has a counter row in ``event_seq``. A write reserves
  the seqs of all its events on a thread with one statement,
  ``INSERT ... ON CONFLICT (thread_id) DO UPDATE SET next_seq = next_seq + n
  RETURNING next_seq``, then inserts the events, in one transaction. The
  counter row stays locked until commit (Postgres row lock; SQLite's single
  writer), so writers of one thread queue on that row only, writers of other
  threads do not wait, and a rolled-back write gives its numbers back: no
  gaps, no duplicates. A batch spanning threads takes the counters in thread
  id order, so two such batches cannot deadlock. The primary key
  ``(thread_id, seq)`` backs this up.
- **Singletons.** ``put_if_absent`` reserves a seq first (which queues it
  behind every other writer of the thread), then looks for an event of the
  run with that type and inserts only if there is none; otherwise it rolls
  back, returning the seq. The partial unique index
  ``uq_run_events_singleton`` also refuses a second ``put_if_absent`` row for
  the run and type, whatever thread id a caller passes.
- **Retries.** Each call is one transaction, retried as a whole on a
  transient error (:func:`runlane.runtime.runs.retry.call_with_retry`); a
  failed attempt wrote nothing. A commit whose acknowledgement is lost is
  retried too, so such a batch can be written twice.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runlane.db.engine import begin_write, create_engine
from runlane.db.tables import event_seq, run_events
from runlane.runtime.events.base import (
    DEFAULT_MAX_CONTENT_BYTES,
    EVENT_FIELDS,
    EventPage,
    EventStore,
    NewEvent,
    check_limit,
    is_valid_id,
    prepare,
)
from runlane.runtime.runs.retry import PersistenceRetryPolicy, call_with_retry, is_unique_violation
from runlane.runtime.runs.store.sql_rows import to_iso

__all__ = ["SqlEventStore"]

_T = TypeVar("_T")
_Row = dict[str, Any]
_COLUMNS = [run_events.c[name] for name in EVENT_FIELDS]


# Built once (a statement built per call costs more CPU than running it).
_SAME_TYPE = (
    select(true())
    .where(
        run_events.c.thread_id == bindparam("p_thread_id"),
        run_events.c.run_id == bindparam("p_run_id"),
        run_events.c.event_type == bindparam("p_event_type"),
    )
    .limit(1)
)
_INSERT = insert(run_events)


@functools.cache
def _reserve_statement(dialect: str) -> Any:
    """Reserve ``p_count`` seqs of thread ``p_thread_id``; ``RETURNING next_seq``."""
    count = bindparam("p_count", type_=Integer())
    statement = (postgresql if dialect == "postgresql" else sqlite).insert(event_seq)
    statement = statement.values(thread_id=bindparam("p_thread_id"), next_seq=count + 1)
    return statement.on_conflict_do_update(
        index_elements=[event_seq.c.thread_id],
        set_={"next_seq": event_seq.c.next_seq + count},
    ).returning(event_seq.c.next_seq)


class _Exists(Exception):
    """put_if_absent found an event of the run and type: roll back."""


def _event(row: Any) -> _Row:
    out = {name: row[name] for name in EVENT_FIELDS}
    out["content"] = orjson.loads(out["content"])
    out["created_at"] = to_iso(out["created_at"])
    if out["metadata"] is None:
        out["metadata"] = {}
    return out


def _values(row: _Row, *, singleton: bool = False) -> dict[str, Any]:
    values = dict(row)
    values["content"] = orjson.dumps(row["content"]).decode()
    values["created_at"] = datetime.fromisoformat(row["created_at"])
    values["singleton"] = singleton
    return values


class SqlEventStore(EventStore):
    """Events in a migrated database (the engine the run store uses).

    The engine must come from :func:`runlane.db.engine.create_engine` and the
    schema must be at head. :meth:`close` disposes the engine only when the
    store created it (:meth:`from_url`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        retry: PersistenceRetryPolicy | None = None,
        owns_engine: bool = False,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(
                f"SqlEventStore supports SQLite and Postgres, not {engine.dialect.name}"
            )
        self.max_content_bytes = max_content_bytes
        self._engine = engine
        self._retry = retry or PersistenceRetryPolicy()
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SqlEventStore:
        """A store on a new engine for ``url``, disposed with the store."""
        return cls(create_engine(url), owns_engine=True, **kwargs)

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    async def _retried(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        return await call_with_retry(self._retry, fn, *args)

    # --- writes -------------------------------------------------------------

    async def _reserve(self, conn: AsyncConnection, thread_id: str, count: int) -> int:
        """Reserve ``count`` seqs of the thread; returns the first."""
        statement = _reserve_statement(conn.dialect.name)
        reserved = await conn.execute(statement, {"p_thread_id": thread_id, "p_count": count})
        next_seq: int = reserved.scalar_one()
        return next_seq - count

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = [prepare(event, self.max_content_bytes, now) for event in events]
        if rows:
            await self._retried(self._write, rows)
        return rows

    async def _write(self, rows: list[_Row]) -> None:
        by_thread: dict[str, list[_Row]] = {}
        for row in rows:
            by_thread.setdefault(row["thread_id"], []).append(row)
        async with begin_write(self._engine) as conn:
            for thread_id in sorted(by_thread):
                group = by_thread[thread_id]
                first = await self._reserve(conn, thread_id, len(group))
                for offset, row in enumerate(group):
                    row["seq"] = first + offset
            await conn.execute(_INSERT, [_values(row) for row in rows])

    async def put_if_absent(self, event: NewEvent) -> dict[str, Any] | None:
        row = prepare(event, self.max_content_bytes)
        try:
            await self._retried(self._write_singleton, row)
        except _Exists:
            return None
        except IntegrityError as exc:
            if is_unique_violation(exc):
                return None
            raise
        return row

    async def _write_singleton(self, row: _Row) -> None:
        async with begin_write(self._engine) as conn:
            row["seq"] = await self._reserve(conn, row["thread_id"], 1)
            # The counter row is ours until commit: no writer of the thread
            # can add an event between this check and the insert. A duplicate
            # rolls back, and with it the seq it reserved.
            same = {f"p_{name}": row[name] for name in ("thread_id", "run_id", "event_type")}
            if (await conn.execute(_SAME_TYPE, same)).first() is not None:
                raise _Exists
            await conn.execute(_INSERT, [_values(row, singleton=True)])

    # --- reads --------------------------------------------------------------

    async def _page(
        self,
        where: list[ColumnElement[bool]],
        user_id: str | None,
        limit: int,
        before_seq: int | None,
        after_seq: int | None,
    ) -> EventPage:
        check_limit(limit)
        if user_id is not None:
            where.append(run_events.c.user_id == user_id)
        if after_seq is not None:
            where.append(run_events.c.seq > after_seq)
        if before_seq is not None:
            where.append(run_events.c.seq < before_seq)
        backward = before_seq is not None and after_seq is None
        order = run_events.c.seq.desc() if backward else run_events.c.seq.asc()
        statement = select(*_COLUMNS).where(*where).order_by(order).limit(limit + 1)
        rows = await self._retried(self._fetch, statement)
        has_more = len(rows) > limit
        del rows[limit:]
        if backward:
            rows.reverse()
        return EventPage(rows, has_more)

    async def _fetch(self, statement: Select[Any]) -> list[_Row]:
        async with self._engine.connect() as conn:
            result = await conn.execute(statement)
            return [_event(row) for row in result.mappings()]

    async def list_messages(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        where = [run_events.c.thread_id == thread_id, run_events.c.category == "message"]
        return await self._page(where, user_id, limit, before_seq, after_seq)

    async def list_messages_by_run(
        self,
        thread_id: str,
        run_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        where = [
            run_events.c.thread_id == thread_id,
            run_events.c.run_id == run_id,
            run_events.c.category == "message",
        ]
        return await self._page(where, user_id, limit, before_seq, after_seq)

    async def list_events(
        self,
        thread_id: str,
        run_id: str,
        *,
        event_types: Sequence[str] | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        user_id: str | None = None,
    ) -> EventPage:
        where = [run_events.c.thread_id == thread_id, run_events.c.run_id == run_id]
        if event_types:
            where.append(run_events.c.event_type.in_(list(event_types)))
        return await self._page(where, user_id, limit, None, after_seq)

    async def count_messages(
        self, thread_id: str, *, run_id: str | None = None, user_id: str | None = None
    ) -> int:
        statement = select(func.count()).where(
            run_events.c.thread_id == thread_id, run_events.c.category == "message"
        )
        if run_id is not None:
            statement = statement.where(run_events.c.run_id == run_id)
        if user_id is not None:
            statement = statement.where(run_events.c.user_id == user_id)
        return await self._retried(self._count, statement)

    async def _count(self, statement: Select[Any]) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(statement)).scalar_one())

    # --- deletes ------------------------------------------------------------

    async def delete_by_thread(self, thread_id: str) -> int:
        if not is_valid_id(thread_id):
            return 0
        return await self._retried(self._delete_thread, thread_id)

    async def _delete_thread(self, thread_id: str) -> int:
        async with begin_write(self._engine) as conn:
            # The counter first: it waits for the thread's writers in flight,
            # whose events are then deleted too.
            await conn.execute(delete(event_seq).where(event_seq.c.thread_id == thread_id))
            result = await conn.execute(
                delete(run_events).where(run_events.c.thread_id == thread_id)
            )
        return int(result.rowcount)

    async def delete_by_run(self, thread_id: str, run_id: str) -> int:
        return await self._retried(self._delete_run, thread_id, run_id)

    async def _delete_run(self, thread_id: str, run_id: str) -> int:
        async with begin_write(self._engine) as conn:
            result = await conn.execute(
                delete(run_events).where(
                    run_events.c.thread_id == thread_id, run_events.c.run_id == run_id
                )
            )
        return int(result.rowcount)
