"""Ownership: which process runs which run, and how processes hand runs over.

:class:`Ownership` extends :class:`~runlane.runtime.runs.lanes.Lanes` with
what makes runs safe across processes sharing a store (and across restarts
of one process):

- **Claims.** Freeing a lane claims the thread's next queued run for this
  process (:meth:`Ownership.dispatch`); a periodic sweep claims queues whose
  next run nobody took (:meth:`Ownership.claim_stalled`). A claim is one
  atomic store update, so a run is claimed by exactly one process.
- **Leases and fencing.** :meth:`Ownership.renew_leases` extends every lease
  of this process in one statement. A run the store does not confirm is
  examined: cancelled or pre-empted elsewhere, it is stopped and finished
  here; ended or taken over elsewhere, it is *fenced*: its work is stopped
  and nothing more is written for it. When renewals fail for a whole TTL,
  every run is fenced, since peers may be recovering them.
- **Orphans.** Runs whose owner's lease lapsed are claimed and ended
  ``error`` with ``stop_reason="orphan_recovered"``; never run again.
- **Cancel requests** written by another process are applied on a
  notification (:meth:`Ownership.apply_cancel_request`) or at the next renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runlane.runtime.runs.lanes import Lanes
from runlane.runtime.runs.persistence import RunWriter
from runlane.runtime.runs.recovery import recover_orphans
from runlane.runtime.runs.retry import PersistenceRetryPolicy
from runlane.runtime.runs.schemas import (
    ACTIVE_STATUSES,
    ORPHAN_RECOVERED,
    CancelAction,
    RunRecord,
    RunStatus,
)
from runlane.runtime.runs.store.base import RunStore

__all__ = ["RESTART_ERROR", "Ownership"]

logger = logging.getLogger("runlane.runtime.runs.manager")

RESTART_ERROR = "The server stopped before this run reached a final state."


class Ownership(Lanes):
    """Claims, leases, fencing and orphan recovery; see the module docstring."""

    def __init__(
        self,
        store: RunStore | None,
        policy: PersistenceRetryPolicy,
        *,
        owner_id: str,
        lease_ttl: float,
        eviction_delay: float,
        clock: Callable[[], datetime] | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, policy, eviction_delay=eviction_delay)
        self._monotonic = monotonic
        self.owner_id = owner_id
        self._lease_ttl = timedelta(seconds=lease_ttl)
        # None: lease times come from the database's clock (see RunStore).
        self._clock = clock
        self._writer = RunWriter(store, policy) if store is not None else None
        self._lease_task: asyncio.Task[None] | None = None
        self._lease_confirmed_at = self._monotonic()
        self.draining = False
        """True once the process stops taking work: it admits and claims no run."""
        self.shares_store = False
        """True when other processes may use the store too: queued runs then
        outlive this process (its shutdown leaves them to its peers)."""
        self._released_lanes: set[str] = set()
        self.counters = dict.fromkeys(
            ("claimed", "fenced", "orphans_recovered", "lease_renewals", "lease_renewal_failures"),
            0,
        )
        """Totals since start: runs claimed from queues, runs fenced, orphans
        ended, lease renewal rounds and failed rounds (for ``/metrics``)."""

    if TYPE_CHECKING:

        async def cancel(
            self,
            run_id: str,
            *,
            action: CancelAction | str = CancelAction.interrupt,
            user_id: str | None = None,
        ) -> bool: ...

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unrenewed."""
        return self._lease_ttl.total_seconds()

    def _store_now(self) -> datetime | None:
        """The clock for lease arithmetic in the store: the test clock, else the database's."""
        return self._clock() if self._clock is not None else None

    def _local_now(self) -> datetime:
        return self._clock() if self._clock is not None else datetime.now(UTC)

    # -- leases and orphans -----------------------------------------------------

    async def reconcile_orphaned_inflight_runs(
        self,
        *,
        error: str = RESTART_ERROR,
        before: str | None = None,
        sole_process: bool = False,
    ) -> list[RunRecord]:
        """End as ``error`` every active run whose owner is gone.

        A run is an orphan when it holds its lane, its lease is missing or
        expired (with ``sole_process``, any lease at all, and queued runs
        too: no other process can be alive) and this process has no live
        record of it. Each one is claimed with one conditional update (an
        owner that renewed in time keeps its run), then gets
        ``status="error"``, ``error`` and ``stop_reason="orphan_recovered"``.
        Returns the runs that were ended; a run whose error status could not
        be written is not among them (the caller ends their streams). Each
        freed lane's next queued run is claimed.
        """
        if self._writer is None:
            return []
        recovered = await recover_orphans(
            self._writer,
            owner_id=self.owner_id,
            now=self._store_now(),
            lease_ttl=self._lease_ttl,
            error=error,
            before=before,
            sole_process=sole_process,
            is_live=lambda run_id: run_id in self._runs and self._runs[run_id].is_active,
        )
        self.counters["orphans_recovered"] += len(recovered)
        for thread_id in dict.fromkeys(r.thread_id for r in recovered):
            await self.dispatch(thread_id)
        return recovered

    # -- dispatch ----------------------------------------------------------------

    async def dispatch(self, thread_id: str) -> None:
        """Claim and start the thread's next queued run if its lane is free.

        A draining process claims nothing: the runs stay queued for its peers
        (:meth:`release_queues` tells them).
        """
        if self._store is None:
            return
        if self.draining:
            self._released_lanes.add(thread_id)
            return
        try:
            row = await self._retry(
                self._store.claim_next,
                thread_id,
                owner_id=self.owner_id,
                ttl=self._lease_ttl,
                now=self._store_now(),
            )
        except Exception:
            logger.exception("could not claim the next run of thread %s", thread_id)
            return
        if row is not None:
            self.counters["claimed"] += 1
            self._adopt(row)

    async def release_queues(self) -> None:
        """Tell peers about the lanes this draining process freed and will not refill."""
        if self._store is None or not self._released_lanes:
            return
        threads, self._released_lanes = sorted(self._released_lanes), set()
        try:
            await self._store.announce_free_lanes(threads)
        except Exception:
            logger.exception("could not announce %d free lanes; peers' sweeps will", len(threads))

    def running_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks of the runs this process is executing now."""
        return [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]

    async def claim_stalled(self, limit: int = 100) -> int:
        """Claim and start the next run of threads whose queue stalled; how many."""
        if self._store is None or self.draining:
            return 0
        rows = await self._retry(
            self._store.claim_stalled,
            owner_id=self.owner_id,
            ttl=self._lease_ttl,
            now=self._store_now(),
            limit=limit,
        )
        for row in rows:
            logger.info("run %s: claimed from a stalled queue", row["run_id"])
            self.counters["claimed"] += 1
            self._adopt(row)
        return len(rows)

    async def forget_claimed_elsewhere(self) -> None:
        """Drop local records of queued runs that another process claimed or ended."""
        if self._store is None:
            return
        for record in [r for r in self._runs.values() if r.queued and r.is_active]:
            row = await self._retry(self._store.get, record.run_id)
            if not record.queued or record.task is not None:
                continue  # claimed here while we read the row
            if row is None or not row["queued"] or row["status"] != RunStatus.pending:
                self._evict(record.run_id)

    # -- leases, fencing, cancel requests ---------------------------------------

    async def renew_leases(self) -> None:
        """Extend the leases of this process's lane holders in one store call.

        A cancel requested durably by another process is applied here. A run
        the store no longer confirms as ours is examined (:meth:`_unconfirmed`).
        """
        if self._store is None:
            return
        renewals = await self._retry(
            self._store.renew_leases, self.owner_id, ttl=self._lease_ttl, now=self._store_now()
        )
        self._lease_confirmed_at = self._monotonic()
        self.counters["lease_renewals"] += 1
        confirmed = {renewal.run_id: renewal.cancel_action for renewal in renewals}
        for record in list(self._runs.values()):
            if not record.is_active or record.queued or record.fenced:
                continue
            if record.run_id not in confirmed:
                await self._unconfirmed(record)
                continue
            action = confirmed[record.run_id]
            if action is not None and not record.abort_event.is_set():
                await self.cancel(record.run_id, action=action)

    async def _unconfirmed(self, record: RunRecord) -> None:
        """Decide from the row what became of a run whose lease was not renewed."""
        assert self._store is not None
        row = await self._retry(self._store.get, record.run_id)
        if row is None:
            self._fence(record, "its row is gone")
        elif (row["status"] or RunStatus.pending) in ACTIVE_STATUSES:
            if row["owner_id"] != self.owner_id:
                self._fence(record, f"process {row['owner_id']} took it over")
            # else: admitted after the renewal's snapshot; nothing to do.
        elif row["cancel_action"] and row["stop_reason"] != ORPHAN_RECOVERED:
            # Cancelled or pre-empted elsewhere: still ours to stop and finish.
            self._apply_ended_row(record, row)
        else:
            self._fence(record, f"it ended {row['status']} elsewhere")

    def _apply_ended_row(self, record: RunRecord, row: dict[str, Any]) -> None:
        action = CancelAction(row["cancel_action"])
        record.cancel_action = action
        self._abort_locally(record, action, row["error"])
        if record.task is None:
            self._finish_unstarted_soon(record)

    def _fence(self, record: RunRecord, reason: str) -> None:
        """Stop a run this process lost; nothing more is written for it."""
        logger.warning("run %s: no longer ours (%s); stopping it", record.run_id, reason)
        self.counters["fenced"] += 1
        record.fenced = True
        record.abort_event.set()
        self._stop_work(record)
        self._schedule_eviction(record)

    def fence_all(self, reason: str) -> int:
        """Fence every run this process holds (its leases can no longer be confirmed)."""
        fenced = 0
        for record in list(self._runs.values()):
            if record.is_active and not record.queued and not record.fenced:
                self._fence(record, reason)
                fenced += 1
        return fenced

    @property
    def lease_unconfirmed_for(self) -> float:
        """Seconds since the store last confirmed this process's leases."""
        return self._monotonic() - self._lease_confirmed_at

    async def apply_cancel_request(self, run_id: str) -> None:
        """Act on a cancel requested (or a pre-emption) elsewhere for a run this process holds.

        Called on a notification; a no-op for runs that are not ours or already stopping.
        """
        record = self._runs.get(run_id)
        if self._store is None or record is None or record.abort_event.is_set():
            return
        if not record.is_active or record.fenced:
            return
        row = await self._retry(self._store.get, run_id)
        if row is None or not row["cancel_action"]:
            return
        if (row["status"] or RunStatus.pending) in ACTIVE_STATUSES:
            await self.cancel(run_id, action=row["cancel_action"])
        elif row["owner_id"] in (None, self.owner_id) and row["stop_reason"] != ORPHAN_RECOVERED:
            self._apply_ended_row(record, row)

    async def start_lease_keeper(self) -> None:
        """Renew leases every third of the lease TTL until :meth:`close`.

        When renewals keep failing for a whole TTL, every run is fenced:
        peers may already be recovering them.
        """
        if self._lease_task is None:
            self._lease_confirmed_at = self._monotonic()
            self._lease_task = asyncio.create_task(self._keep_leases(), name="runlane-leases")

    async def _keep_leases(self) -> None:
        interval = self._lease_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            await self.lease_tick()

    async def lease_tick(self) -> None:
        """One round of the lease keeper: renew, or fence everything once a whole
        TTL passed without a confirmed renewal (peers may be recovering the runs)."""
        try:
            await self.renew_leases()
        except Exception:
            self.counters["lease_renewal_failures"] += 1
            logger.exception("lease renewal failed")
            if self.lease_unconfirmed_for >= self._lease_ttl.total_seconds():
                self.fence_all("its lease could not be renewed for a whole lease TTL")
