"""Which store errors are worth retrying, and retrying them with backoff.

An error is **transient** when waiting and trying again can succeed without
anyone changing anything. Classification looks at exception *types and
codes* anywhere in the chain (SQLAlchemy's ``orig``, ``__cause__``,
``__context__``):

- SQLite: ``SQLITE_BUSY`` (5) and ``SQLITE_LOCKED`` (6), extended codes
  included (``sqlite_errorcode & 0xFF``). A ``sqlite3.OperationalError``
  built by hand has no code; only then its message decides.
- Postgres: serialization failure ``40001``, deadlock ``40P01``, connection
  exceptions (class ``08``), the server shutting the session down (``57P01``,
  ``57P02``, ``57P03``), and asyncpg's errors for a closed connection.
- The network: ``ConnectionError`` (reset, refused, aborted, broken pipe),
  ``TimeoutError``, and other ``OSError`` whose errno is a socket failure.
- SQLAlchemy: a ``DBAPIError`` with ``connection_invalidated`` set.

Everything else (syntax errors, constraint violations, missing tables, bugs)
is permanent and raised at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = [
    "PersistenceRetryPolicy",
    "call_with_retry",
    "is_transient",
    "is_unique_violation",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY (extended codes).
_SQLITE_UNIQUE_CODES = (2067, 1555)
_SQLITE_LOCK_MESSAGES = ("database is locked", "database is busy", "database table is locked")

_PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})
_PG_UNIQUE_VIOLATION = "23505"

_SOCKET_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, each once."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _sqlstate(exc: BaseException) -> str | None:
    # asyncpg errors carry `sqlstate`; SQLAlchemy's adapted ones `pgcode` too.
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        # A hand-built error (tests, wrappers) has no code: fall back to its text.
        return isinstance(exc, sqlite3.OperationalError) and any(
            message in str(exc).lower() for message in _SQLITE_LOCK_MESSAGES
        )
    # asyncpg is imported by the Postgres driver only; until then none of its
    # errors can exist, and the embedded defaults never pay for loading it.
    asyncpg: Any = sys.modules.get("asyncpg")
    if asyncpg is not None:
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.ConnectionDoesNotExistError):
            return True
        if isinstance(exc, asyncpg.InterfaceError):
            # InterfaceError also reports misuse ("another operation is in
            # progress"), which a retry cannot fix; only a closed connection can be.
            return "connection is closed" in str(exc) or "connection was closed" in str(exc)
    state = _sqlstate(exc)
    if state is not None:
        return state in _PG_TRANSIENT_STATES or state.startswith("08")
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _SOCKET_ERRNOS


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed."""
    return any(_one_is_transient(link) for link in _chain(exc))


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a unique-constraint violation."""
    for link in _chain(exc):
        if _sqlstate(link) == _PG_UNIQUE_VIOLATION:
            return True
        code = getattr(link, "sqlite_errorcode", None)
        if isinstance(link, sqlite3.IntegrityError) and code in _SQLITE_UNIQUE_CODES:
            return True
    return False


@dataclass(frozen=True, slots=True)
class PersistenceRetryPolicy:
    """How often and how patiently a transient store error is retried.

    Attempt ``n`` (from 1) that fails transiently is followed by a wait of
    ``min(max_delay, initial_delay * backoff_factor ** (n - 1))`` seconds;
    after ``max_attempts`` attempts the last error is raised.
    """

    max_attempts: int = 5
    initial_delay: float = 0.05
    max_delay: float = 1.0
    backoff_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.backoff_factor < 1:
            raise ValueError("delays must be >= 0 and backoff_factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        return float(min(self.max_delay, self.initial_delay * self.backoff_factor ** (attempt - 1)))


async def call_with_retry(
    policy: PersistenceRetryPolicy,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    **kwargs: Any,
) -> T:
    """``await fn(*args, **kwargs)``, retrying transient errors per ``policy``.

    A permanent error is raised on its first occurrence; a transient one once
    the attempts are used up. Each retry is logged at WARNING.
    """
    attempt = 1
    while True:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if attempt >= policy.max_attempts or not is_transient(exc):
                raise
            delay = policy.delay(attempt)
            logger.warning(
                "Transient store error in %s (attempt %d of %d), retrying in %.3fs: %r",
                getattr(fn, "__qualname__", fn),
                attempt,
                policy.max_attempts,
                delay,
                exc,
            )
            attempt += 1
            await sleep(delay)
