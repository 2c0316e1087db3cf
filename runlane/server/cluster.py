"""This process's part in a group of runlane processes sharing one database.

:class:`ClusterMember` runs the background duties that make runs safe when
several processes (or one that restarts) share a store:

- at start, orphan recovery: runs left active by a process that is gone end
  ``error`` with ``stop_reason="orphan_recovered"`` (with SQLite, one
  process only, every active run is such an orphan);
- the lease keeper (:meth:`RunManager.start_lease_keeper`): one renewal
  statement per ``lease_ttl / 3``, fencing the runs it cannot confirm;
- a sweep every ``sweep_interval``: orphans of peers whose lease expired,
  queues whose next run nobody claimed, local records of queued runs that
  a peer claimed;
- on Postgres, a LISTEN connection: cancels and pre-emptions requested on a
  peer reach this process at once (:data:`~runlane.db.notify.CANCEL_CHANNEL`),
  and freed lanes of a draining peer are claimed at once
  (:data:`~runlane.db.notify.DISPATCH_CHANNEL`);
- :meth:`drain` on SIGTERM: take no new work, give local runs
  ``shutdown_grace`` seconds, interrupt the rest durably (each stream gets
  its terminal entry), then hang up every SSE stream with a ``retry:`` hint.

A process that is killed outright does none of this; its peers' sweeps end
its runs within ``lease_ttl + sweep_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from runlane.db.notify import CANCEL_CHANNEL, DISPATCH_CHANNEL, Listener
from runlane.server.metrics import RUNS_FINISHED

if TYPE_CHECKING:
    from runlane.config import Settings
    from runlane.executor.executor import RunExecutor
    from runlane.runtime.runs.manager import RunManager
    from runlane.server.sse import OpenStreams

__all__ = ["ClusterMember"]

logger = logging.getLogger(__name__)


class ClusterMember:
    """Background duties of one process; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        manager: RunManager,
        executor: RunExecutor,
        streams: OpenStreams,
    ) -> None:
        self._settings = settings
        self._manager = manager
        self._executor = executor
        self._streams = streams
        self._listener: Listener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drained: asyncio.Task[None] | None = None
        manager.shares_store = not settings.is_sqlite

    async def start(self) -> None:
        """Recover orphans, then start leases, sweeps and (on Postgres) the listener."""
        sole = self._settings.is_sqlite
        await self._recover_orphans(sole_process=sole)
        if not sole:
            self._listener = Listener(
                self._settings.database_url,
                {CANCEL_CHANNEL: self._on_cancel, DISPATCH_CHANNEL: self._on_dispatch},
                on_reconnect=self._wake,
            )
            await self._listener.start()
        await self._manager.start_lease_keeper()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="runlane-sweeper")

    async def _recover_orphans(self, *, sole_process: bool) -> None:
        recovered = await self._executor.recover_orphans(sole_process=sole_process)
        for _ in recovered:
            RUNS_FINISHED.inc(status="error")

    # -- notifications --------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_cancel(self, run_id: str) -> None:
        self._spawn(self._manager.apply_cancel_request(run_id))

    def _on_dispatch(self, thread_id: str) -> None:
        self._spawn(self._manager.dispatch(thread_id))

    def _wake(self) -> None:
        """Notifications were lost while reconnecting: sweep now instead of later."""
        self._spawn(self.sweep())

    # -- sweeping ---------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """One round: peers' orphans, stalled queues, stale local queue records.

        Skipped while this process cannot confirm its own leases (its
        database connection is failing): it must not take on more runs.
        """
        manager = self._manager
        if manager.lease_unconfirmed_for >= manager.lease_ttl:
            return
        try:
            if not self._settings.is_sqlite:
                await self._recover_orphans(sole_process=False)
            await manager.claim_stalled()
            await manager.forget_claimed_elsewhere()
        except Exception:
            logger.exception("sweep failed")

    # -- shutdown ---------------------------------------------------------------

    def begin_drain(self) -> None:
        """Start :meth:`drain` (idempotent); called from the SIGTERM handler."""
        if self._drained is None:
            self._drained = asyncio.create_task(self.drain(), name="runlane-drain")

    async def drain(self) -> None:
        """Stop taking work, let local runs finish within the grace, interrupt the rest."""
        manager = self._manager
        manager.draining = True
        grace = self._settings.shutdown_grace
        running = manager.running_tasks()
        logger.info("shutting down: %d runs get %.1f s to finish", len(running), grace)
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        await manager.close()  # interrupts what is left, durably, ending each stream
        await manager.release_queues()
        hung_up = self._streams.hang_up_all()
        if hung_up:
            logger.info("asked %d SSE clients to reconnect elsewhere", hung_up)

    async def close(self) -> None:
        """Finish a drain in progress, stop the background tasks and the listener."""
        if self._drained is not None:
            await self._drained
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()
