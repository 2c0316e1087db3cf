"""SqlThreadStore: the thread store on the ``threads`` table (SQLite or Postgres).

Each method is one statement, or one short transaction that starts with a
write (so on SQLite it holds the write lock and on Postgres the row lock
before it reads): a metadata merge cannot lose a concurrent update. Transient
errors (SQLite busy, lost connections) are raised unchanged; a failed call
wrote nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import begin_write
from runlane.db.tables import threads
from runlane.exceptions import ThreadExistsError
from runlane.runtime.metadata import check_filter, check_page, json_document, sql_contains
from runlane.runtime.runs.schemas import validate_thread_id
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
    it open).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(
                f"SqlThreadStore supports SQLite and Postgres, not {engine.dialect.name}"
            )
        self._engine = engine
        self._dialect = engine.dialect.name

    async def _fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
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
        now = now_utc()
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        statement = (
            insert(threads)
            .values(
                thread_id=thread_id,
                user_id=user_id,
                status="idle",
                metadata=document,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[threads.c.thread_id])
            .returning(*threads.c)
        )
        async with begin_write(self._engine) as conn:
            created = (await conn.execute(statement)).mappings().first()
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
        rows = await self._fetch(select(threads).where(*_scope(thread_id, user_id)))
        return rows[0] if rows else None

    async def update(
        self, thread_id: str, *, metadata: dict[str, Any], user_id: str | None = None
    ) -> dict[str, Any] | None:
        document = json_document("Thread metadata", metadata)
        where = _scope(thread_id, user_id)
        async with begin_write(self._engine) as conn:
            touched = await conn.execute(update(threads).where(*where).values(updated_at=now_utc()))
            if touched.rowcount != 1:
                return None
            current = await conn.scalar(select(threads.c.metadata).where(*where))
            statement = (
                update(threads)
                .where(*where)
                .values(metadata={**(current or {}), **document})
                .returning(*threads.c)
            )
            row = (await conn.execute(statement)).mappings().one()
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
        async with self._engine.connect() as conn:
            return int(await conn.scalar(statement) or 0)

    async def set_status(self, thread_id: str, status: ThreadStatus) -> bool:
        check_thread_status(status)
        statement = (
            update(threads)
            .where(threads.c.thread_id == thread_id)
            .values(status=status, updated_at=now_utc())
        )
        async with begin_write(self._engine) as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1
