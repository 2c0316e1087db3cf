"""Postgres notifications between runlane processes.

Stores send with ``pg_notify`` inside the transaction that made the change,
so a notification is delivered exactly when (and only if) the change
commits. :class:`Listener` holds one dedicated connection per process and
hands each payload to a callback. Notifications are a wake-up, never the
truth: a listener that missed one (its connection dropped) catches up from
the tables on the next periodic sweep, so nothing depends on delivery.

Channels:

- :data:`CANCEL_CHANNEL`, payload a run id: a cancel was requested for the
  run, or a pre-empting admission ended it. Its owner stops it now instead
  of at its next lease renewal.
- :data:`DISPATCH_CHANNEL`, payload a thread id: the thread's lane is free
  and runs wait in its queue (sent by a process that will not claim them
  itself, such as one shutting down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    import asyncpg

__all__ = ["CANCEL_CHANNEL", "DISPATCH_CHANNEL", "Listener", "libpq_dsn"]

logger = logging.getLogger(__name__)

CANCEL_CHANNEL = "runlane_cancel"
DISPATCH_CHANNEL = "runlane_dispatch"

Callback = Callable[[str], None]


def libpq_dsn(database_url: str) -> str:
    """The libpq form of a SQLAlchemy Postgres URL (drops the ``+asyncpg`` driver)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """LISTEN on ``channels`` over one connection; calls ``channels[name](payload)``.

    Callbacks run on the event loop and must not block; they usually start a
    task. When the connection drops, the listener reconnects with a backoff
    and calls ``on_reconnect`` (notifications sent meanwhile are lost, so
    the caller sweeps).
    """

    def __init__(
        self,
        database_url: str,
        channels: Mapping[str, Callback],
        *,
        on_reconnect: Callable[[], None] | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self._dsn = libpq_dsn(database_url)
        self._channels = dict(channels)
        self._on_reconnect = on_reconnect
        self._retry_delay = retry_delay
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    async def start(self) -> None:
        """Connect and listen; raises if the first connection fails."""
        await self._connect()
        self._task = asyncio.create_task(self._keep(), name="runlane-listener")

    async def _connect(self) -> None:
        # Imported here: the stores import this module's channel names on
        # every deployment, the driver is needed only where a listener runs.
        import asyncpg

        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        for channel in self._channels:
            await conn.add_listener(channel, self._deliver)
        self._conn = conn

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        callback = self._channels.get(channel)
        if callback is None:
            return
        try:
            callback(payload)
        except Exception:
            logger.exception("notification on %s failed", channel)

    async def _keep(self) -> None:
        import asyncpg

        while True:
            await self._lost.wait()
            logger.warning("notification connection lost; reconnecting")
            while True:
                await asyncio.sleep(self._retry_delay)
                try:
                    await self._connect()
                except (OSError, asyncpg.PostgresError):
                    logger.warning("notification connection: reconnect failed; retrying")
                    continue
                break
            if self._on_reconnect is not None:
                self._on_reconnect()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
