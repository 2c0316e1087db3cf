"""SqlAssistantStore: assistants on the ``assistants`` and ``assistant_versions`` tables.

Every write is one transaction. One that writes a version first takes the
assistant's row (a no-op ``UPDATE``: the row lock on Postgres, the write lock
on SQLite), then reads the highest version, so concurrent updates of one
assistant get distinct, consecutive versions. Transient errors (SQLite busy,
lost connections) are raised unchanged; a failed call wrote nothing.

:meth:`SqlAssistantStore.get` is cached in the process for ``cache_ttl``
seconds (one by default; :mod:`runlane.runtime.assistants.cache`): a write
through the same store object is seen by its next read at once, a write by
another process (another worker on the same database) within ``cache_ttl``
seconds. Searches, counts and versions always read the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runlane.db.engine import begin_read, begin_write
from runlane.db.tables import assistant_versions, assistants
from runlane.exceptions import AssistantExistsError
from runlane.runtime.assistants.base import (
    ASSISTANT_FIELDS,
    ASSISTANT_SORT_KEYS,
    VERSION_FIELDS,
    VERSIONED_FIELDS,
    AssistantSortKey,
    AssistantStore,
    check_assistant_id,
    check_changes,
    check_version,
    put_fields,
    updated_fields,
    version_fields,
)
from runlane.runtime.assistants.cache import DEFAULT_ASSISTANT_CACHE_TTL, AssistantCache
from runlane.runtime.metadata import check_filter, check_page, sql_contains
from runlane.runtime.runs.store.sql_rows import now_utc, to_iso
from runlane.runtime.threads.base import IfExists, SortOrder, check_sort

__all__ = ["SqlAssistantStore"]


def _dict(row: Mapping[Any, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    out = {name: row[name] for name in fields}
    for name in ("created_at", "updated_at"):
        if name in out:
            out[name] = to_iso(out[name])
    return out


class SqlAssistantStore(AssistantStore):
    """Assistants in a migrated database.

    The engine must come from :func:`runlane.db.engine.create_engine` and the
    schema must be at head. The caller owns the engine (:meth:`close` leaves
    it open). ``cache_ttl``: seconds a :meth:`get` is reused (0: never); see
    the module docstring for what that means with several processes.
    """

    def __init__(
        self, engine: AsyncEngine, *, cache_ttl: float = DEFAULT_ASSISTANT_CACHE_TTL
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(
                f"SqlAssistantStore supports SQLite and Postgres, not {engine.dialect.name}"
            )
        self._engine = engine
        self._dialect = engine.dialect.name
        self._cache = AssistantCache(cache_ttl)

    @contextmanager
    def _changing(self, assistant_id: str | None) -> Iterator[None]:
        """Around every write: the cache forgets ``assistant_id`` once it ended."""
        self._cache.write_began()
        try:
            yield
        finally:
            self._cache.write_ended(assistant_id)

    async def _fetch(self, statement: Select[Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
        async with begin_read(self._engine) as conn:
            result = await conn.execute(statement)
            return [_dict(row, fields) for row in result.mappings()]

    async def _insert(
        self, conn: AsyncConnection, assistant_id: str, fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Insert at version 1; None (nothing written) when the id is taken."""
        now = now_utc()
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        statement = (
            insert(assistants)
            .values(assistant_id=assistant_id, version=1, created_at=now, updated_at=now, **fields)
            .on_conflict_do_nothing(index_elements=[assistants.c.assistant_id])
            .returning(*assistants.c)
        )
        row = (await conn.execute(statement)).mappings().first()
        if row is None:
            return None
        await conn.execute(
            assistant_versions.insert().values(
                assistant_id=assistant_id, version=1, created_at=now, **fields
            )
        )
        return _dict(row, ASSISTANT_FIELDS)

    async def _lock(self, conn: AsyncConnection, assistant_id: str) -> dict[str, Any] | None:
        """Take the assistant's row for this transaction and read it; None if missing."""
        where = assistants.c.assistant_id == assistant_id
        locked = await conn.execute(
            update(assistants).where(where).values(version=assistants.c.version)
        )
        if locked.rowcount != 1:
            return None
        row = (await conn.execute(select(assistants).where(where))).mappings().one()
        return _dict(row, ASSISTANT_FIELDS)

    async def _write_version(
        self, conn: AsyncConnection, assistant_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Append version ``max + 1`` with ``fields`` and make it current (row locked)."""
        top = await conn.scalar(
            select(func.max(assistant_versions.c.version)).where(
                assistant_versions.c.assistant_id == assistant_id
            )
        )
        number = int(top or 0) + 1
        return await self._make_current(conn, assistant_id, number, fields, now_utc(), new=True)

    async def _make_current(
        self,
        conn: AsyncConnection,
        assistant_id: str,
        number: int,
        fields: dict[str, Any],
        now: datetime,
        *,
        new: bool,
    ) -> dict[str, Any]:
        if new:
            await conn.execute(
                assistant_versions.insert().values(
                    assistant_id=assistant_id, version=number, created_at=now, **fields
                )
            )
        row = (
            (
                await conn.execute(
                    update(assistants)
                    .where(assistants.c.assistant_id == assistant_id)
                    .values(version=number, updated_at=now, **fields)
                    .returning(*assistants.c)
                )
            )
            .mappings()
            .one()
        )
        return _dict(row, ASSISTANT_FIELDS)

    async def put(self, assistant: Mapping[str, Any]) -> dict[str, Any]:
        assistant_id, fields = put_fields(assistant)
        with self._changing(assistant_id):
            return await self._put(assistant_id, fields)

    async def _put(self, assistant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        async with begin_write(self._engine) as conn:
            created = await self._insert(conn, assistant_id, fields)
            if created is not None:
                return created
            current = await self._lock(conn, assistant_id)
            if current is None:  # deleted between the two statements
                created = await self._insert(conn, assistant_id, fields)
                if created is None:
                    raise AssistantExistsError(f"Assistant {assistant_id} kept changing; retry.")
                return created
            if all(current[name] == fields[name] for name in VERSIONED_FIELDS):
                return current
            return await self._write_version(conn, assistant_id, fields)

    async def create(
        self,
        *,
        assistant_id: str | None,
        graph_id: str,
        config: dict[str, Any],
        context: dict[str, Any],
        metadata: dict[str, Any],
        name: str | None,
        description: str | None,
        if_exists: IfExists = "raise",
    ) -> dict[str, Any]:
        assistant_id = check_assistant_id(
            str(uuid.uuid4()) if assistant_id is None else assistant_id
        )
        fields = version_fields(
            graph_id=graph_id,
            config=config,
            context=context,
            metadata=metadata,
            name=name,
            description=description,
        )
        with self._changing(assistant_id):
            async with begin_write(self._engine) as conn:
                created = await self._insert(conn, assistant_id, fields)
                if created is not None:
                    return created
                existing = await self._get(conn, assistant_id)
        if if_exists == "raise" or existing is None:
            raise AssistantExistsError(f"Assistant {assistant_id} already exists.")
        return existing

    async def _get(self, conn: AsyncConnection, assistant_id: str) -> dict[str, Any] | None:
        statement = select(assistants).where(assistants.c.assistant_id == assistant_id)
        row = (await conn.execute(statement)).mappings().first()
        return None if row is None else _dict(row, ASSISTANT_FIELDS)

    async def get(self, assistant_id: str) -> dict[str, Any] | None:
        cached = self._cache.get(assistant_id)
        if cached is not None:
            return cached
        ticket = self._cache.ticket()
        async with begin_read(self._engine) as conn:
            found = await self._get(conn, assistant_id)
        self._cache.fill(assistant_id, found, ticket)
        return found

    async def update(
        self,
        assistant_id: str,
        *,
        graph_id: str | None = None,
        config: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any] | None:
        changes = {
            "graph_id": graph_id,
            "config": config,
            "context": context,
            "metadata": metadata,
            "name": name,
            "description": description,
        }
        check_changes(changes)
        with self._changing(assistant_id):
            async with begin_write(self._engine) as conn:
                current = await self._lock(conn, assistant_id)
                if current is None:
                    return None
                fields = updated_fields(current, changes)
                return await self._write_version(conn, assistant_id, fields)

    async def delete(self, assistant_id: str) -> bool:
        versions = assistant_versions.delete().where(
            assistant_versions.c.assistant_id == assistant_id
        )
        with self._changing(assistant_id):
            async with begin_write(self._engine) as conn:
                await conn.execute(versions)
                result = await conn.execute(
                    assistants.delete().where(assistants.c.assistant_id == assistant_id)
                )
        return result.rowcount == 1

    def _filters(
        self, graph_id: str | None, name: str | None, metadata: dict[str, Any] | None
    ) -> list[ColumnElement[bool]]:
        want = check_filter(metadata)
        where: list[ColumnElement[bool]] = []
        if graph_id is not None:
            where.append(assistants.c.graph_id == graph_id)
        if name is not None:
            where.append(func.lower(assistants.c.name).contains(name.lower(), autoescape=True))
        if want is not None:
            where.append(sql_contains(assistants.c.metadata, want, self._dialect))
        return where

    def _sort_key(self, sort_by: str) -> ColumnElement[Any]:
        key: ColumnElement[Any] = assistants.c[sort_by]
        if sort_by == "name":
            key = func.coalesce(key, "")
        if sort_by in ("assistant_id", "graph_id", "name") and self._dialect == "postgresql":
            key = key.collate("C")  # code-point order, as on SQLite and in memory
        return key

    async def search(
        self,
        *,
        graph_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: AssistantSortKey = "created_at",
        sort_order: SortOrder = "desc",
    ) -> list[dict[str, Any]]:
        check_sort(sort_by, sort_order, ASSISTANT_SORT_KEYS)
        check_page(limit, offset)
        keys = [self._sort_key(sort_by), self._sort_key("assistant_id")]
        order = [key.desc() if sort_order == "desc" else key.asc() for key in keys]
        statement = (
            select(assistants)
            .where(*self._filters(graph_id, name, metadata))
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        return await self._fetch(statement, ASSISTANT_FIELDS)

    async def count(
        self,
        *,
        graph_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        statement = select(func.count()).select_from(assistants)
        statement = statement.where(*self._filters(graph_id, name, metadata))
        async with begin_read(self._engine) as conn:
            return int(await conn.scalar(statement) or 0)

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        want = check_filter(metadata)
        check_page(limit, offset)
        statement = select(assistant_versions).where(
            assistant_versions.c.assistant_id == assistant_id
        )
        if want is not None:
            statement = statement.where(
                sql_contains(assistant_versions.c.metadata, want, self._dialect)
            )
        statement = (
            statement.order_by(assistant_versions.c.version.desc()).limit(limit).offset(offset)
        )
        return await self._fetch(statement, VERSION_FIELDS)

    async def set_latest(self, assistant_id: str, version: int) -> dict[str, Any] | None:
        check_version(version)
        with self._changing(assistant_id):
            return await self._set_latest(assistant_id, version)

    async def _set_latest(self, assistant_id: str, version: int) -> dict[str, Any] | None:
        async with begin_write(self._engine) as conn:
            if await self._lock(conn, assistant_id) is None:
                return None
            chosen = (
                (
                    await conn.execute(
                        select(assistant_versions).where(
                            assistant_versions.c.assistant_id == assistant_id,
                            assistant_versions.c.version == version,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if chosen is None:
                return None
            fields = {name: chosen[name] for name in VERSIONED_FIELDS}
            return await self._make_current(
                conn, assistant_id, version, fields, now_utc(), new=False
            )
