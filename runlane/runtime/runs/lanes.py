"""Lanes: the runs this process executes, one at a time per thread.

:class:`Lanes` keeps the local records (``_runs``), starts a run's work when
it holds its thread's lane, frees the lane when it ends and evicts the record
afterwards. With a store, freeing a lane claims the thread's next queued run
for this process (whichever process admitted it); without one, queues are
local. :class:`runlane.runtime.runs.manager.RunManager` builds on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from runlane.exceptions import ConflictError
from runlane.runtime.runs.records import record_from_row
from runlane.runtime.runs.retry import PersistenceRetryPolicy, call_with_retry
from runlane.runtime.runs.schemas import CancelAction, MultitaskStrategy, RunRecord, RunStatus
from runlane.runtime.runs.store.base import RunStore

__all__ = ["Lanes", "OnClaimed", "OnUnstartedEnd", "Work"]

logger = logging.getLogger("runlane.runtime.runs.manager")

T = TypeVar("T")
Work = Callable[[RunRecord], Awaitable[Any]]
"""What a run does once it holds its lane; see :meth:`Lanes.start`."""
OnClaimed = Callable[[RunRecord], None]
"""Starts a run this process claimed from the queue with no work registered for it."""
OnUnstartedEnd = Callable[[RunRecord], Awaitable[None]]
"""Finishes a run that ended before its work started (its stream's terminal entry)."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Lanes:
    """Local run records and the in-process execution of their work."""

    def __init__(
        self, store: RunStore | None, policy: PersistenceRetryPolicy, *, eviction_delay: float
    ) -> None:
        self._store = store
        self._policy = policy
        self._eviction_delay = eviction_delay
        self._runs: dict[str, RunRecord] = {}
        self._work: dict[str, Work] = {}
        self._evictions: dict[str, asyncio.TimerHandle] = {}
        self._on_claimed: OnClaimed | None = None
        self._on_unstarted_end: OnUnstartedEnd | None = None
        self._finishing: set[asyncio.Task[None]] = set()

    if TYPE_CHECKING:

        async def set_status(
            self, run_id: str, status: RunStatus | str, *, error: str | None = None
        ) -> bool: ...

        async def dispatch(self, thread_id: str) -> None: ...

    def bind(self, *, on_claimed: OnClaimed, on_unstarted_end: OnUnstartedEnd) -> None:
        """Install the executor's hooks.

        ``on_claimed(record)`` starts a run this process claimed from the
        queue when no work was registered for it with :meth:`start` (it was
        admitted by another process, or its admission did not start it).
        ``on_unstarted_end(record)`` runs once for every owned or claimed run
        that ended before its work started, so its stream still ends.
        """
        self._on_claimed = on_claimed
        self._on_unstarted_end = on_unstarted_end

    # -- registry -----------------------------------------------------------

    def _thread_records(self, thread_id: str) -> list[RunRecord]:
        """Local records of the thread in creation order (few: ended ones are evicted)."""
        return [r for r in self._runs.values() if r.thread_id == thread_id]

    def _evict(self, run_id: str) -> None:
        handle = self._evictions.pop(run_id, None)
        if handle is not None:
            handle.cancel()
        self._work.pop(run_id, None)
        self._runs.pop(run_id, None)

    def _schedule_eviction(self, record: RunRecord) -> None:
        """Evict an ended record once its task (if any) has finished."""
        if record.is_active or (record.task is not None and not record.task.done()):
            return
        if record.run_id in self._evictions or record.run_id not in self._runs:
            return
        if self._eviction_delay <= 0:
            self._evict(record.run_id)
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self._eviction_delay, self._evict, record.run_id)
        self._evictions[record.run_id] = handle

    @property
    def local_run_count(self) -> int:
        """How many run records this process holds (active or awaiting eviction)."""
        return len(self._runs)

    async def _retry(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await call_with_retry(self._policy, fn, *args, **kwargs)

    def _admit_locally(
        self, record: RunRecord, strategy: MultitaskStrategy
    ) -> tuple[bool, list[str]]:
        active = [r for r in self._thread_records(record.thread_id) if r.is_active]
        if not active:
            return False, []
        if strategy == MultitaskStrategy.reject:
            raise ConflictError(f"Thread {record.thread_id} already has an active run.")
        if strategy == MultitaskStrategy.enqueue:
            return True, []
        return False, [r.run_id for r in active]

    def _abort_locally(
        self, record: RunRecord, action: CancelAction, error: str | None, *, stop: bool = True
    ) -> None:
        """Mark the run interrupted and signal its work; ``stop`` also cancels running work."""
        running = record.status == RunStatus.running
        record.abort_action = record.abort_action or action
        record.abort_event.set()
        record.status = RunStatus.interrupted
        if error is not None:
            record.error = error
        record.updated_at = _now_iso()
        if stop and running:
            self._stop_work(record)

    @staticmethod
    def _stop_work(record: RunRecord) -> None:
        # Only running work is cancelled: a task that has not reached the work
        # sees the abort event itself, and still frees the lane on its way out.
        task = record.task
        if task is None or task.done():
            return
        if task is asyncio.current_task():
            # The work cancels its own run: it stops at its next await.
            asyncio.get_running_loop().call_soon(task.cancel)
        else:
            task.cancel()

    # -- running ----------------------------------------------------------------

    def start(self, run_id: str, work: Work) -> bool:
        """Run ``work(record)`` once the run holds its thread's lane.

        The run moves to ``running`` first (in the store, as a compare-and-set
        from ``pending``); if it was cancelled before that, ``work`` is never
        called. When ``work`` returns, a run still ``running`` ends
        ``success``; when it raises, ``error``. Then the next queued run of the
        thread starts. Returns False, and never calls ``work``, when the run
        already ended (or is not owned by this process).
        """
        record = self._runs.get(run_id)
        if record is None or not record.is_active or record.task is not None:
            return False
        self._work[run_id] = work
        if not record.queued:
            self._spawn(record)
        return True

    def _spawn(self, record: RunRecord) -> None:
        work = self._work.pop(record.run_id, None)
        if work is None or record.task is not None:
            return
        record.task = asyncio.create_task(self._drive(record, work), name=f"run-{record.run_id}")
        record.task.add_done_callback(lambda _: self._schedule_eviction(record))

    async def _finish_unstarted(self, record: RunRecord) -> None:
        # Once per run: the hook's own status write ends up here again.
        if record.unstarted_end_called:
            return
        record.unstarted_end_called = True
        if self._on_unstarted_end is not None and not record.fenced:
            try:
                await self._on_unstarted_end(record)
            except Exception:
                logger.exception("run %s: finishing the unstarted run failed", record.run_id)

    def _finish_unstarted_soon(self, record: RunRecord) -> None:
        task = asyncio.create_task(self._finish_unstarted(record), name=f"run-end-{record.run_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _drive(self, record: RunRecord, work: Work) -> None:
        started = False
        try:
            if started := await self._try_start(record):
                try:
                    await work(record)
                except asyncio.CancelledError:
                    if not record.abort_event.is_set():
                        raise
                    # Cancelled by our own abort: the run ends here, the task goes on.
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                except Exception as exc:
                    logger.exception("run %s failed", record.run_id)
                    await self.set_status(record.run_id, RunStatus.error, error=repr(exc))
                else:
                    if record.status == RunStatus.running:
                        await self.set_status(record.run_id, RunStatus.success)
        finally:
            if not started:
                await asyncio.shield(self._finish_unstarted(record))
            await asyncio.shield(self._after_run(record))

    async def _try_start(self, record: RunRecord) -> bool:
        if record.abort_event.is_set() or record.status != RunStatus.pending:
            return False
        if self._store is not None:
            try:
                started = await self._retry(self._store.start_run, record.run_id)
            except Exception:
                logger.exception("could not start run %s", record.run_id)
                await self.set_status(record.run_id, RunStatus.error, error="Could not start.")
                return False
            if not started:
                logger.info("run %s was cancelled before it started", record.run_id)
                if record.is_active:
                    record.status = RunStatus.interrupted
                return False
        if record.abort_event.is_set():
            return False
        record.status = RunStatus.running
        record.updated_at = _now_iso()
        return True

    async def _after_run(self, record: RunRecord) -> None:
        if record.fenced:
            return  # the run is not ours any more: write nothing, claim nothing
        if record.is_active:
            await self.set_status(record.run_id, RunStatus.interrupted)
        await self._release_lane(record.thread_id)

    async def _release_lane(self, thread_id: str) -> None:
        """Start the next queued run of the thread if its lane is free."""
        if self._store is not None:
            await self.dispatch(thread_id)
            return
        siblings = self._thread_records(thread_id)
        if any(r.is_active and not r.queued for r in siblings):
            return
        waiting = [r for r in siblings if r.is_active and r.queued]
        if waiting:
            waiting[0].queued = False
            self._spawn(waiting[0])

    def _adopt(self, row: dict[str, Any]) -> None:
        """Run a row this process just claimed: its registered work, else ``on_claimed``."""
        record = self._runs.get(row["run_id"])
        if record is None:
            record = record_from_row(row)
            record.store_only = False
            self._runs[record.run_id] = record
        record.queued = False
        record.owner_id = row["owner_id"]
        record.lease_expires_at = row["lease_expires_at"]
        if record.run_id in self._work:
            self._spawn(record)
        elif self._on_claimed is not None:
            self._on_claimed(record)
        else:
            logger.warning("run %s: claimed, but nothing here can run it", record.run_id)

    async def _ended(self, record: RunRecord) -> None:
        """Free the lane and schedule eviction unless the run's task does it."""
        if record.task is None:
            await self._finish_unstarted(record)
        if record.task is None or record.task.done():
            await self._release_lane(record.thread_id)
            self._schedule_eviction(record)
