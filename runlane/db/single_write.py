"""One statement in a write transaction of its own: :func:`write_one`.

Most of what a run writes is one statement per transaction (a status, a
lease, the thread's status). On SQLite such a write costs ~20 us in SQLite
and ~600 us in SQLAlchemy's async execution around it (a pooled connection,
greenlet switches, the result machinery). :func:`write_one` skips that layer
there: the statement, a SQLAlchemy Core statement built once, is compiled
once per dialect into its SQL text, parameter order and type processors, and
``BEGIN IMMEDIATE``, the statement and ``COMMIT`` run in one call on a
connection of the engine's own, kept for these writes.

What stays the same as :func:`~runlane.db.engine.begin_write` with one
statement: the write takes its turn with the process's other writers of the
file first, the same SQL runs with the same bound values (the columns' bind
and result processors are applied), a failure rolls back in the same call
and is raised as SQLAlchemy's exception for it (``IntegrityError``,
``OperationalError``, the ``sqlite3`` error as ``orig``). What differs: these
statements are not seen by SQLAlchemy's execution events or its ``echo``
log, and a write inside another write transaction of the same task waits for
SQLite's lock (``busy_timeout``) as a nested :func:`begin_write` would.
Statements must not use expanding ``IN`` lists (bind each value instead).
Postgres, and SQLite in memory (one connection only), take the ordinary path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.util import await_only

from runlane.db import sqlite_driver
from runlane.db.engine import begin_write, sqlite_file_of, write_turn

__all__ = ["WriteResult", "write_one"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did: rows changed, and the rows of its ``RETURNING`` clause."""

    rowcount: int
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]  # bind parameter names in the order of the ``?``s
    defaults: Mapping[str, Any]  # values fixed in the statement itself
    processors: tuple[Callable[[Any], Any] | None, ...]
    keys: tuple[str, ...]  # the RETURNING columns
    results: tuple[Callable[[Any], Any] | None, ...]

    def bind(self, parameters: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, process in zip(self.names, self.processors, strict=True):
            if name in parameters:
                value = parameters[name]
            elif name in self.defaults:
                value = self.defaults[name]
            else:  # the error SQLAlchemy raises for it, before anything runs
                missing = InvalidRequestError(f"A value is required for bind parameter {name!r}")
                raise StatementError(str(missing), self.sql, dict(parameters), missing)
            values.append(value if process is None else process(value))
        return tuple(values)

    def row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        return {
            key: value if process is None else process(value)
            for key, value, process in zip(self.keys, raw, self.results, strict=True)
        }


# Per statement (weakly: a statement dropped takes its plans along), per dialect.
_PLANS: weakref.WeakKeyDictionary[UpdateBase, dict[int, _Plan]] = weakref.WeakKeyDictionary()


def _plan(statement: UpdateBase, dialect: Dialect) -> _Plan:
    plans = _PLANS.setdefault(statement, {})
    found = plans.get(id(dialect))
    if found is not None:
        return found
    compiled: Any = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("write_one: bind each value of an IN list, not the list")
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    columns = tuple(statement.exported_columns)  # the RETURNING columns, if any
    plan = plans[id(dialect)] = _Plan(
        sql=compiled.string,
        names=names,
        defaults={n: binds[n].value for n in names if not binds[n].required},
        # Through each type's dialect implementation, as SQLAlchemy does: on
        # SQLite, DateTime's text format and JSON's serializer live there.
        processors=tuple(
            binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        ),
        keys=tuple(str(column.key) for column in columns),
        results=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ),
    )
    return plan


def _run_one(
    connection: sqlite3.Connection, sql: str, values: tuple[Any, ...]
) -> tuple[int, list[Any]]:
    """On the connection's thread: BEGIN IMMEDIATE, the statement, COMMIT; or ROLLBACK."""
    connection.execute("BEGIN IMMEDIATE").close()
    try:
        cursor = connection.execute(sql, values)
        rows = cursor.fetchall() if cursor.description is not None else []
        rowcount = cursor.rowcount  # after the fetch: RETURNING rows count as they step
        cursor.close()
        connection.execute("COMMIT").close()
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK").close()
        raise
    return rowcount, rows


class _Writer:
    """The connection an engine's single writes use, opened on first use."""

    def __init__(self, database: str, kwargs: dict[str, Any], pragmas: tuple[str, ...]) -> None:
        self._database = database
        self._kwargs = {**kwargs, "isolation_level": None}
        self._pragmas = pragmas
        self._connection: sqlite_driver.OneTripConnection | None = None
        self._opening = asyncio.Lock()

    async def connection(self) -> sqlite_driver.OneTripConnection:
        if self._connection is None:
            async with self._opening:
                if self._connection is None:
                    opened = await sqlite_driver.connect(self._database, **self._kwargs)()
                    for pragma in self._pragmas:
                        await opened.execute(pragma)
                    self._connection = opened
        return self._connection

    def close(self) -> None:
        """Close the connection; called inside ``await engine.dispose()``, whose
        greenlet lets a synchronous listener await (as SQLAlchemy's async pool does)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await_only(connection.close())


_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()


def _writer(engine: AsyncEngine) -> _Writer | None:
    sync_engine = engine.sync_engine
    writer = _WRITERS.get(sync_engine)
    if writer is None:
        found = sqlite_file_of(engine)
        if found is None:
            return None
        database, kwargs, pragmas = found
        writer = _WRITERS[sync_engine] = _Writer(database, kwargs, pragmas)
        event.listen(sync_engine, "engine_disposed", lambda _engine: writer.close())
    return writer


async def write_one(
    engine: AsyncEngine, statement: UpdateBase, parameters: Mapping[str, Any]
) -> WriteResult:
    """Run ``statement`` with ``parameters`` in a write transaction of its own."""
    writer = _writer(engine)
    if writer is None:
        async with begin_write(engine) as conn:
            result = await conn.execute(statement, dict(parameters))
            rows = [dict(row) for row in result.mappings()] if result.returns_rows else []
        return WriteResult(result.rowcount, rows)
    plan = _plan(statement, engine.dialect)
    values = plan.bind(parameters)
    connection = await writer.connection()
    async with write_turn(engine):
        try:
            rowcount, rows = await connection._execute(  # type: ignore[no-untyped-call]
                _run_one, connection._conn, plan.sql, values
            )
        except sqlite3.Error as exc:
            raise DBAPIError.instance(plan.sql, values, exc, sqlite3.Error) from exc
    return WriteResult(rowcount, [plan.row(raw) for raw in rows])
