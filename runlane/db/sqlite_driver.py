"""aiosqlite connections that run each statement in one call on their thread.

aiosqlite runs every ``sqlite3`` call on the connection's own thread: each
call is a round trip (queue the call, wake the thread, hand the GIL over,
wake the event loop with the result). SQLAlchemy's aiosqlite adapter makes
four of them per statement (create a cursor, execute, fetch the rows, close
the cursor). :class:`OneTripConnection` is an ``aiosqlite.Connection`` whose
cursors do all four in **one** call: the statement runs, every row it
returns is fetched, and the ``sqlite3`` cursor is closed before the call
returns; ``fetch*`` then read from that buffer and ``close`` does nothing.

What changes and what does not:

- The same statements run on the same ``sqlite3`` connection in the same
  order, on the same thread; transactions, locks, errors (raised from the
  thread unchanged) and durability are those of aiosqlite.
- A statement's rows are all in memory once it ran. SQLAlchemy's adapter
  fetches them all right away anyway; only a server-side cursor
  (``stream_results``) would have fetched them in chunks.
- A statement's cursor never outlives the call, so it cannot keep a read
  transaction open.
- A ``BEGIN`` can ride along (``pending_begin``): it runs in the same call,
  immediately before the transaction's first statement, so the transaction
  holds its locks before any of its statements runs, as it would with a
  ``BEGIN`` of its own; only the time between ``BEGIN`` and the first
  statement, when nothing runs on the connection anyway, is gone. A ``BEGIN``
  that fails (``database is locked``) fails that first statement.

:func:`connect` is what :func:`runlane.db.engine.create_engine` passes to
SQLAlchemy as ``async_creator`` for SQLite URLs. The connection also serves
code written against aiosqlite directly (``cursor()``, ``execute()`` awaited
or as ``async with``, ``async for`` over a cursor, ``commit()``), such as
LangGraph's ``AsyncSqliteSaver(conn)``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from aiosqlite import context as aiosqlite_context

__all__ = ["OneTripConnection", "OneTripCursor", "connect"]

_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(
    connection: sqlite3.Connection,
    begin: str | None,
    statement: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """On the connection's thread: ``begin`` if given, then execute, fetch every
    row, close the cursor."""
    if begin is not None:
        connection.execute(begin).close()
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(statement, parameters)
        else:
            cursor.execute(statement, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description is not None else []
        # After the fetch: SQLite counts a RETURNING statement's rows as they step.
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor:
    """The part of ``aiosqlite.Cursor`` SQLAlchemy uses, one thread call per statement."""

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list[Any] = []
        self._next = 0

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, statement: str, parameters: Any, many: bool) -> OneTripCursor:
        connection = self._connection
        begin, connection.pending_begin = connection.pending_begin, None
        outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
            _run, connection._conn, begin, statement, parameters, many
        )
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        self._next = 0
        return self

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        return await self._call(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        return await self._call(sql, parameters, True)

    def _take(self, count: int | None) -> list[Any]:
        start = self._next
        end = len(self._rows) if count is None else min(len(self._rows), start + count)
        self._next = end
        return self._rows[start:end]

    async def fetchone(self) -> Any:
        rows = self._take(1)
        return rows[0] if rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._take(self.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._take(None)

    async def close(self) -> None:
        self._rows = []
        self._next = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while self._next < len(self._rows):
            self._next += 1
            yield self._rows[self._next - 1]


class OneTripConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` whose cursors are :class:`OneTripCursor`.

    ``pending_begin``: a ``BEGIN`` statement sent in the same call as the next
    statement, right before it (see :func:`runlane.db.engine.create_engine`);
    set it to None to drop it (a transaction that ran no statement).
    """

    pending_begin: str | None = None

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    @aiosqlite_context.contextmanager
    async def execute(  # type: ignore[override]
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> OneTripCursor:
        """Run ``sql`` (one call); usable as ``await`` or ``async with``, as aiosqlite's."""
        return await OneTripCursor(self).execute(sql, parameters)


def connect(database: str, **kwargs: Any) -> Callable[[], Coroutine[Any, Any, OneTripConnection]]:
    """An ``async_creator`` opening ``sqlite3.connect(database, **kwargs)`` as a
    :class:`OneTripConnection` (its thread a daemon, as SQLAlchemy makes it)."""

    async def create() -> OneTripConnection:
        connection = OneTripConnection(partial(sqlite3.connect, database, **kwargs), 64)
        connection._thread.daemon = True
        await connection
        return connection

    return create
