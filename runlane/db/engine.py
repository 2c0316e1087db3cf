"""The one place runlane opens a database: :func:`create_engine`.

Two backends, chosen by the URL scheme:

- **SQLite** (``sqlite+aiosqlite:///path.db``; ``sqlite:///`` is accepted and
  upgraded) is the embedded default. Every new connection switches the file to
  WAL (readers never block the writer), sets a busy timeout (a writer waits for
  the lock instead of failing at once) and turns foreign keys on.
  ``synchronous=NORMAL``: a commit survives a crash of the process (it is in
  the WAL file when the commit returns); a power loss or an OS crash can lose
  the commits made since the last WAL checkpoint, never corrupt the database.
- **Postgres** (``postgresql+asyncpg://...``; ``postgresql://`` and
  ``postgres://`` are accepted) gets a bounded pool whose connections are
  checked before use, so a restarted server costs no failed request.

Transactions on SQLite (see :func:`begin_write` and :func:`begin_read`): a
write transaction begins ``IMMEDIATE`` (it takes the write lock first, so it
waits for other writers instead of failing half-way), any other one
``DEFERRED``, and a :func:`begin_read` block sends no ``BEGIN`` at all. Each
call to the driver is a round trip to its connection thread, so runlane makes
few: a statement is one call (:mod:`runlane.db.sqlite_driver`; SQLAlchemy's
aiosqlite adapter alone makes four), ``BEGIN`` rides in the call of the
transaction's first statement (so a write transaction holds the write lock
before its first statement runs; ``exec_driver_sql`` would take three calls),
and the ``COMMIT``/``ROLLBACK`` call is skipped when SQLite reports no open
transaction (``sqlite3``'s own commit and rollback do nothing then either). A
one-statement read is one call, a one-statement write transaction two (eight
each before). Write transactions of one process on one SQLite file take
turns first-come first-served before they begin (see :func:`begin_write`),
so none of them sleeps in SQLite's busy handler while another one commits.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from runlane.db import sqlite_driver

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "begin_read",
    "begin_write",
    "create_engine",
    "normalize_url",
    "sqlite_file_of",
    "write_turn",
]

DEFAULT_BUSY_TIMEOUT_MS = 5_000
"""How long a SQLite writer waits for the write lock before SQLITE_BUSY."""

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """``url`` with the async driver runlane uses for its backend.

    Raises ValueError for a backend runlane does not support.
    """
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    if driver not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            f"Unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db."
        )
    return parsed.set(drivername=driver)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_Mode = Literal["write", "read"] | None
_MODE: contextvars.ContextVar[_Mode] = contextvars.ContextVar("runlane_db_mode", default=None)


@asynccontextmanager
async def _begin_as(
    mode: _Mode, engine: AsyncEngine, *, transaction: bool
) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` (``transaction``) or ``engine.connect()``, the first
    ``BEGIN`` of it sent in ``mode`` (the mode applies until the block's
    connection has begun; statements later in the block are unaffected)."""
    token: contextvars.Token[_Mode] | None = _MODE.set(mode)
    try:
        opened = engine.begin() if transaction else engine.connect()
        async with opened as connection:
            if not transaction:
                await connection.begin()
            assert token is not None
            _MODE.reset(token)
            token = None
            yield connection
    finally:
        if token is not None:
            _MODE.reset(token)


@dataclass(frozen=True)
class _WriteTurns:
    """Write transactions on one SQLite file in this process take turns (see begin_write)."""

    key: str  # the database file, or one in-memory database
    timeout: float  # seconds: the engine's busy_timeout


_TURNS: weakref.WeakKeyDictionary[Any, _WriteTurns] = weakref.WeakKeyDictionary()
# SQLite file engines: the file, sqlite3.connect's keyword arguments, the PRAGMAs.
_FILES: weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)
# One lock per file and event loop (an asyncio.Lock serves a single loop).
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_HOLDING: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "runlane_db_write_turns", default=frozenset()
)


@asynccontextmanager
async def write_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """Wait for this file's turn (FIFO) before ``BEGIN IMMEDIATE``; see :func:`begin_write`.

    Does nothing for engines other than SQLite's.
    """
    turns = _TURNS.get(engine.sync_engine)
    if turns is None or turns.key in _HOLDING.get():
        yield  # not SQLite, or nested in a write of this task: SQLite decides
        return
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(turns.key, asyncio.Lock())
    try:
        # asyncio.timeout, not wait_for: no task of its own per transaction.
        async with asyncio.timeout(turns.timeout):
            await lock.acquire()
    except TimeoutError:
        yield  # not granted in time: BEGIN IMMEDIATE waits (busy_timeout) or fails
        return
    token = _HOLDING.set(_HOLDING.get() | {turns.key})
    try:
        yield
    finally:
        _HOLDING.reset(token)
        lock.release()


@asynccontextmanager
async def _begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with write_turn(engine), _begin_as("write", engine, transaction=True) as connection:
        yield connection


def begin_write(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    """``engine.begin()`` for a transaction that writes.

    On SQLite it takes the write lock (``BEGIN IMMEDIATE``) right before its
    first statement runs, so it waits for other writers instead of failing
    when it first writes, and what it reads is current; elsewhere it is
    ``engine.begin()``.

    Within one process, write transactions on one SQLite file first take
    turns on an ``asyncio.Lock`` (first come, first served), before they take
    a pooled connection: a waiting writer holds no connection and never
    sleeps in SQLite's busy handler, and the next one starts as soon as the
    previous one ended. The turn is skipped inside another write transaction
    of the same task, and given up after the engine's busy timeout; then
    ``BEGIN IMMEDIATE`` waits for SQLite's lock as before (another process, a
    nested write) and fails with ``database is locked`` after the busy timeout.
    """
    return _begin_write(engine)


def begin_read(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    """A connection for reads that need no snapshot shared across statements.

    On SQLite no ``BEGIN`` is sent: each statement runs as its own implicit
    transaction, so each one reads a consistent snapshot, but two statements
    of the block may see different commits in between. That saves two round
    trips to the driver's thread per block (``BEGIN`` and ``ROLLBACK``).
    Writing in such a block is a mistake (each statement would commit on its
    own). Elsewhere it is ``engine.connect()``.
    """
    return _begin_as("read", engine, transaction=False)


def create_engine(
    url: str | URL,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pool_size: int = 10,
    max_overflow: int = 10,
    echo: bool = False,
) -> AsyncEngine:
    """An async engine for ``url``, configured for runlane's access pattern.

    ``busy_timeout_ms`` applies to SQLite only; ``pool_size`` and
    ``max_overflow`` to Postgres only (SQLite file databases use SQLAlchemy's
    default queue pool, in-memory ones a single shared connection). The caller
    owns the engine and must ``await engine.dispose()``.
    """
    parsed = normalize_url(url)
    common: dict[str, Any] = {
        "echo": echo,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if parsed.drivername == "postgresql+asyncpg":
        return create_async_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=True,
            # Server-side idle timeouts and proxies drop old connections;
            # recycle before they are likely to.
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "runlane"}},
            **common,
        )

    # Connections whose cursors make one call on aiosqlite's thread per
    # statement instead of four (runlane.db.sqlite_driver).
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(parsed)
    engine = create_async_engine(
        parsed, async_creator=sqlite_driver.connect(*args, **kwargs), **common
    )

    pragmas = (
        # journal_mode is persistent in the file; the others are per connection.
        "PRAGMA journal_mode=WAL",
        # PRAGMA takes no bound parameters; the value is forced to an int.
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        "PRAGMA foreign_keys=ON",
        # NORMAL is durable across application crashes in WAL mode and
        # avoids an fsync per commit.
        "PRAGMA synchronous=NORMAL",
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own BEGIN is deferred: a transaction that reads first
        # and writes later fails at once with "database is locked" when
        # another writer got in between, without waiting for busy_timeout.
        # runlane begins every transaction itself (see do_begin below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    _install_sqlite_transactions(engine.sync_engine.dialect)
    database = str(args[0]) if args else ":memory:"
    if database == ":memory:" or database.startswith("file::memory:"):
        database = f"memory:{id(engine.sync_engine)}"  # one database per engine
    else:
        _FILES[engine.sync_engine] = (database, dict(kwargs), pragmas)
    _TURNS[engine.sync_engine] = _WriteTurns(database, busy_timeout_ms / 1000)
    return engine


def sqlite_file_of(engine: AsyncEngine) -> tuple[str, dict[str, Any], tuple[str, ...]] | None:
    """For an engine on a SQLite file: the file, ``sqlite3.connect``'s keyword
    arguments and the PRAGMAs each connection runs first; else None."""
    return _FILES.get(engine.sync_engine)


def _adapter(connection: Any) -> Any:
    """SQLAlchemy's aiosqlite adapter connection, from the pool's proxy or itself."""
    return getattr(connection, "dbapi_connection", connection)


def _sqlite3_of(connection: Any) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under SQLAlchemy's aiosqlite adapter, if reachable."""
    aio = getattr(_adapter(connection), "_connection", None)
    raw = getattr(aio, "_conn", None)
    return raw if isinstance(raw, sqlite3.Connection) else None


def _run_and_close(connection: sqlite3.Connection, statement: str) -> None:
    connection.execute(statement).close()


def _install_sqlite_transactions(dialect: Any) -> None:
    """Give this engine's SQLite dialect runlane's ``BEGIN``, ``COMMIT`` and ``ROLLBACK``.

    SQLAlchemy calls ``dialect.do_begin`` inside its DBAPI error handling, so a
    failed ``BEGIN IMMEDIATE`` (``database is locked`` after busy_timeout)
    raises SQLAlchemy's ``OperationalError``, as a statement would. Only this
    engine's dialect object is changed.
    """
    adapter_commit = dialect.do_commit
    adapter_rollback = dialect.do_rollback

    def do_begin(dbapi_connection: Any) -> None:
        # A write transaction (see begin_write) takes the write lock up front
        # with IMMEDIATE, so a busy database makes it wait (busy_timeout)
        # instead of failing half-way; other transactions stay deferred and
        # never wait for a writer in WAL mode; begin_read sends nothing.
        mode = _MODE.get()
        if mode == "read":
            return
        aio = _adapter(dbapi_connection)._connection
        statement = "BEGIN IMMEDIATE" if mode == "write" else "BEGIN"
        if isinstance(aio, sqlite_driver.OneTripConnection):
            # Sent in the same call as the transaction's first statement.
            aio.pending_begin = statement
        else:
            # One call on aiosqlite's thread runs the statement and closes its cursor.
            await_only(aio._execute(_run_and_close, aio._conn, statement))

    def _drop_pending_begin(dbapi_connection: Any) -> None:
        aio = getattr(_adapter(dbapi_connection), "_connection", None)
        if isinstance(aio, sqlite_driver.OneTripConnection):
            aio.pending_begin = None

    def do_commit(dbapi_connection: Any) -> None:
        _drop_pending_begin(dbapi_connection)
        raw = _sqlite3_of(dbapi_connection)
        if raw is None or raw.in_transaction:
            adapter_commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        _drop_pending_begin(dbapi_connection)
        raw = _sqlite3_of(dbapi_connection)
        if raw is None or raw.in_transaction:
            adapter_rollback(dbapi_connection)

    dialect.do_begin = do_begin
    dialect.do_commit = do_commit
    dialect.do_rollback = do_rollback
