"""The startup gate for deployments that allow a single process.

SQLite (one writer, and orphan recovery that treats every active run as its
own) and the in-memory stream bridge (streams live in one process) are safe
only while one runlane process uses them. ``Settings.check_deployment``
refuses ``--workers N`` for them; :func:`hold_solo_lock` also catches
separately started processes:

- SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file;
- Postgres with the memory bridge: a session advisory lock on a dedicated
  connection, keyed by the database.

Both are released by the operating system or the database when the process
dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.config import ConfigurationError, Settings

__all__ = ["SOLO_LOCK_KEY", "hold_solo_lock"]

SOLO_LOCK_KEY = 0x72756E6C616E65  # "runlane"
"""The advisory lock key a single-process deployment holds on Postgres."""


@contextlib.asynccontextmanager
async def hold_solo_lock(settings: Settings, engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the single-process lock for as long as the context is open, if one is needed.

    Raises ConfigurationError, saying what to configure, when another
    process holds it.
    """
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            with _file_lock(Path(database)):
                yield
            return
    elif not settings.redis_url:
        async with _advisory_lock(engine):
            yield
        return
    yield


@contextlib.contextmanager
def _file_lock(database: Path) -> Iterator[None]:
    path = database.with_name(database.name + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"Another runlane process already uses the SQLite database {database}. "
                "SQLite serves one process: stop the other one, or use Postgres "
                "(RUNLANE_DATABASE_URL) and Redis (RUNLANE_REDIS_URL) to run several."
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def _advisory_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    # A session lock on a connection held for the process's life.
    async with engine.connect() as conn:
        if not await conn.scalar(select(func.pg_try_advisory_lock(SOLO_LOCK_KEY))):
            raise ConfigurationError(
                "Another runlane process already uses this database with in-memory streams. "
                "Streams must be shared to run several processes: set RUNLANE_REDIS_URL "
                "on every process."
            )
        try:
            yield
        finally:
            await conn.scalar(select(func.pg_advisory_unlock(SOLO_LOCK_KEY)))
