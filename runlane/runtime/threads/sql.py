"""SqlThreadStore: the thread store on the ``threads`` table (SQLite or Postgres).

Each method is one statement, or one short write transaction that holds the
lock before it reads (SQLite: the write lock, taken by ``BEGIN IMMEDIATE``;
Postgres: the row lock, ``SELECT ... FOR UPDATE``): a metadata merge cannot
lose a concurrent update. Reads are one statement each, sent without
``BEGIN`` on SQLite (:func:`~runlane.db.engine.begin_read`). Transient errors
(SQLite busy, lost connections) are raised unchanged; a failed call wrote
nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, bindparam, case, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import begin_read, begin_write
from runlane.db.single_write import write_one
from runlane.db.tables import runs, threads
from runlane.exceptions import ThreadExistsError
from runlane.runtime.metadata import check_filter, check_page, json_document, sql_contains
from runlane.runtime.runs.schemas import ACTIVE_STATUSES, validate_thread_id
from runlane.runtime.runs.store.sql_clauses import one_of
from runlane.runtime.runs.store.sql_rows import now_utc, to_iso
from runlane.runtime.threads.base import (
    THREAD_FIELDS,
    THREAD_SORT_KEYS,
    IfExists,
    SortOrder,
    ThreadSortKey,
    ThreadStatus,
    ThreadStore,
    check_sort,
    check_thread_status,
)

__all__ = ["SqlThreadStore"]

_ACTIVE = tuple(sorted(status.value for status in ACTIVE_STATUSES))

# The statements of every run's admission and end, built once (parameters bound
# per call): building one costs more than running it.
_GET = select(threads).where(threads.c.thread_id == bindparam("tid"))
_SET_STATUS = (
    update(threads)
    .where(threads.c.thread_id == bindparam("tid"))
    .values(status=bindparam("status"), updated_at=bindparam("now"))
)
_THREAD_HAS_ACTIVE_RUN = exists().where(
    runs.c.thread_id == bindparam("tid"), one_of(runs.c.status, _ACTIVE)
)
_SETTLE = (
    update(threads)
    .where(threads.c.thread_id == bindparam("tid"))
    .values(
        status=case(
            (_THREAD_HAS_ACTIVE_RUN, "busy"),
            else_=bindparam("status"),
        ),
        updated_at=bindparam("now"),
    )
    .returning(threads.c.status)
)


@functools.cache
def _create(dialect: str) -> Any:
    """Insert thread ``tid`` unless it exists; ``RETURNING`` the row (none if it existed)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(threads)
        .values(
            thread_id=bindparam("tid"),
            user_id=bindparam("uid"),
            status="idle",
            metadata=bindparam("doc", type_=threads.c.metadata.type),
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .on_conflict_do_nothing(index_elements=[threads.c.thread_id])
        .returning(*threads.c)
    )


@functools.cache
def _merge_metadata(dialect: str, scoped: bool) -> tuple[Select[Any], Any]:
    """Read thread ``tid``'s metadata (locked on Postgres; SQLite's write lock is
    held already), then write ``doc`` (the merged document) ``RETURNING`` the row.
    ``scoped``: the thread must also belong to ``uid``."""
    where = [threads.c.thread_id == bindparam("tid")]
    if scoped:
        where.append(threads.c.user_id == bindparam("uid"))
    current = select(threads.c.metadata).where(*where)
    if dialect == "postgresql":
        current = current.with_for_update()
    write = (
        update(threads)
        .where(*where)
        .values(
            metadata=bindparam("doc", type_=threads.c.metadata.type), updated_at=bindparam("now")
        )
        .returning(*threads.c)
    )
    return current, write


def _thread(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = {name: row[name] for name in THREAD_FIELDS}
    out["created_at"] = to_iso(out["created_at"])
    out["updated_at"] = to_iso(out["updated_at"])
    if out["metadata"] is None:
        out["metadata"] = {}
    return out


def _scope(thread_id: str, user_id: str | None) -> list[ColumnElement[bool]]:
    where = [threads.c.thread_id == thread_id]
    if user_id is not None:
        where.append(threads.c.user_id == user_id)
    return where


class SqlThreadStore(ThreadStore):
    """Threads in the ``threads`` table of a migrated database.

    The engine must come from :func:`runlane.db.engine.create_engine` and the
    schema must be at head. The caller owns the engine (:meth:`close` leaves
    it open). ``runs_in_database``: the run store keeps its runs in this
    database's ``runs`` table (see :meth:`settle_status`); pass False when it
    does not (a memory run store), so ``settle_status`` asks its callback.
    """

    def __init__(self, engine: AsyncEngine, *, runs_in_database: bool = True) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(
                f"SqlThreadStore supports SQLite and Postgres, not {engine.dialect.name}"
            )
        self._engine = engine
        self._dialect = engine.dialect.name
        self._runs_in_database = runs_in_database

    async def _fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        async with begin_read(self._engine) as conn:
            result = await conn.execute(statement)
            return [_thread(row) for row in result.mappings()]

    async def create(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        if_exists: IfExists = "raise",
    ) -> dict[str, Any]:
        validate_thread_id(thread_id)
        document = json_document("Thread metadata", metadata)
        values = {"tid": thread_id, "uid": user_id, "doc": document, "now": now_utc()}
        async with begin_write(self._engine) as conn:
            created = (await conn.execute(_create(self._dialect), values)).mappings().first()
            if created is not None:
                return _thread(created)
            existing = (
                (await conn.execute(select(threads).where(*_scope(thread_id, user_id))))
                .mappings()
                .first()
            )
        if if_exists == "raise" or existing is None:
            raise ThreadExistsError(f"Thread {thread_id} already exists.")
        return _thread(existing)

    async def get(self, thread_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        if user_id is not None:
            rows = await self._fetch(select(threads).where(*_scope(thread_id, user_id)))
            return rows[0] if rows else None
        async with begin_read(self._engine) as conn:
            row = (await conn.execute(_GET, {"tid": thread_id})).mappings().first()
        return None if row is None else _thread(row)

    async def update(
        self, thread_id: str, *, metadata: dict[str, Any], user_id: str | None = None
    ) -> dict[str, Any] | None:
        document = json_document("Thread metadata", metadata)
        current, write = _merge_metadata(self._dialect, user_id is not None)
        values: dict[str, Any] = {"tid": thread_id, "uid": user_id}
        async with begin_write(self._engine) as conn:
            found = (await conn.execute(current, values)).first()
            if found is None:
                return None
            values.update(doc={**(found[0] or {}), **document}, now=now_utc())
            row = (await conn.execute(write, values)).mappings().one()
        return _thread(row)

    async def delete(self, thread_id: str, *, user_id: str | None = None) -> bool:
        async with begin_write(self._engine) as conn:
            result = await conn.execute(threads.delete().where(*_scope(thread_id, user_id)))
        return result.rowcount == 1

    def _filters(
        self,
        user_id: str | None,
        metadata: dict[str, Any] | None,
        status: str | None,
        ids: list[str] | None = None,
    ) -> list[ColumnElement[bool]]:
        want = check_filter(metadata)
        where: list[ColumnElement[bool]] = []
        if status is not None:
            where.append(threads.c.status == check_thread_status(status))
        if user_id is not None:
            where.append(threads.c.user_id == user_id)
        if ids is not None:
            where.append(threads.c.thread_id.in_(ids))
        if want is not None:
            where.append(sql_contains(threads.c.metadata, want, self._dialect))
        return where

    def _sort_key(self, sort_by: str) -> ColumnElement[Any]:
        key: ColumnElement[Any] = threads.c[sort_by]
        if sort_by in ("thread_id", "status") and self._dialect == "postgresql":
            key = key.collate("C")  # code-point order, as on SQLite and in memory
        return key

    async def search(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        ids: list[str] | None = None,
        status: str | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: ThreadSortKey = "created_at",
        sort_order: SortOrder = "desc",
    ) -> list[dict[str, Any]]:
        check_sort(sort_by, sort_order, THREAD_SORT_KEYS)
        check_page(limit, offset)
        where = self._filters(user_id, metadata, status, ids)
        keys = [self._sort_key(sort_by), self._sort_key("thread_id")]
        order = [key.desc() if sort_order == "desc" else key.asc() for key in keys]
        statement = select(threads).where(*where).order_by(*order).limit(limit).offset(offset)
        return await self._fetch(statement)

    async def count(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> int:
        statement = select(func.count()).select_from(threads)
        statement = statement.where(*self._filters(user_id, metadata, status))
        async with begin_read(self._engine) as conn:
            return int(await conn.scalar(statement) or 0)

    async def settle_status(
        self,
        thread_id: str,
        status: ThreadStatus,
        *,
        has_active_run: Callable[[], Awaitable[bool]],
    ) -> ThreadStatus | None:
        """One ``UPDATE`` that stores ``busy`` instead of ``status`` while the
        ``runs`` table holds a pending or running run of the thread.

        ``has_active_run`` is not called when the store was made with
        ``runs_in_database=True`` (the default, and how the server sets it up:
        the run store is :class:`~runlane.runtime.runs.store.sql.SqlRunStore`
        on the same database). The check and the write are one statement: on
        SQLite under the write lock; on Postgres a run committed after the
        statement's snapshot is followed by its admission's own busy write,
        which waits for this row lock.
        """
        if not self._runs_in_database:
            return await super().settle_status(thread_id, status, has_active_run=has_active_run)
        check_thread_status(status)
        params = {"tid": thread_id, "status": status, "now": now_utc()}
        settled = await write_one(self._engine, _SETTLE, params)
        if not settled.rows:
            return None
        return cast(ThreadStatus, check_thread_status(settled.rows[0]["status"]))

    async def set_status(self, thread_id: str, status: ThreadStatus) -> bool:
        check_thread_status(status)
        params = {"tid": thread_id, "status": status, "now": now_utc()}
        return (await write_one(self._engine, _SET_STATUS, params)).rowcount == 1
