"""The one place runlane opens a database: :func:`create_engine`.

Two backends, chosen by the URL scheme:

- **SQLite** (``sqlite+aiosqlite:///path.db``; ``sqlite:///`` is accepted and
  upgraded) is the embedded default. Every new connection switches the file to
  WAL (readers never block the writer), sets a busy timeout (a writer waits for
  the lock instead of failing at once) and turns foreign keys on.
- **Postgres** (``postgresql+asyncpg://...``; ``postgresql://`` and
  ``postgres://`` are accepted) gets a bounded pool whose connections are
  checked before use, so a restarted server costs no failed request.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "begin_write", "create_engine", "normalize_url"]

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


_WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("runlane_db_writing", default=False)


@asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` for a transaction that writes.

    On SQLite it takes the write lock when it begins, so it waits for other
    writers instead of failing when it first writes; elsewhere it is
    ``engine.begin()``.
    """
    token: contextvars.Token[bool] | None = _WRITING.set(True)
    try:
        async with engine.begin() as connection:
            assert token is not None
            _WRITING.reset(token)
            token = None
            yield connection
    finally:
        if token is not None:
            _WRITING.reset(token)


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

    engine = create_async_engine(parsed, **common)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own BEGIN is deferred: a transaction that reads first
        # and writes later fails at once with "database is locked" when
        # another writer got in between, without waiting for busy_timeout.
        # runlane begins every transaction itself (see _begin below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # journal_mode is persistent in the file; the others are per connection.
            cursor.execute("PRAGMA journal_mode=WAL")
            # PRAGMA takes no bound parameters; the value is forced to an int.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # NORMAL is durable across application crashes in WAL mode and
            # avoids an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # A write transaction (see begin_write) takes the write lock up front
        # with IMMEDIATE, so a busy database makes it wait (busy_timeout)
        # instead of failing half-way; reads stay deferred and never wait for
        # a writer in WAL mode.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _WRITING.get() else "BEGIN")

    return engine
