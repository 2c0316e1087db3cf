"""RunManager: admits runs into their thread's lane, starts them, ends them.

The store is the truth about every run; the manager keeps a local record only
for the runs this process owns (its task handle and abort event) and evicts it
``eviction_delay`` seconds after the run ends, so nothing here grows without
bound. Without a store (``RunManager()``) the local records are all there is.

Guarantees:

- Admission is atomic per thread (see ``RunStore.admit``): ``reject`` raises
  ConflictError when the thread has an active run, ``enqueue`` puts the run in
  line, ``interrupt``/``rollback`` end the active runs and take the lane.
- Runs of one thread start one at a time, in creation order. A run cancelled
  before it starts never starts.
- Terminal statuses are compare-and-set: a late writer cannot replace one.
- Store writes are retried with backoff on transient errors only; a lost row
  is recreated from the local record.
- Across processes sharing a store: a queued run belongs to nobody until the
  process that frees its lane (or a sweep, :meth:`claim_stalled`) claims it;
  each process renews its runs' leases in one statement per tick
  (:meth:`renew_leases`) and stops, writing nothing more, any run the store
  no longer confirms as its own (fencing); cancels requested anywhere reach
  the owner through the row (:meth:`apply_cancel_request`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from runlane.exceptions import (
    ConflictError,
    InvalidPayloadError,
    RunNotFoundError,
    ShuttingDownError,
    StoreUnavailableError,
)
from runlane.runtime.runs.lanes import Work
from runlane.runtime.runs.ownership import RESTART_ERROR, Ownership
from runlane.runtime.runs.records import record_from_row, row_from_record
from runlane.runtime.runs.retry import PersistenceRetryPolicy
from runlane.runtime.runs.schemas import (
    ACTIVE_STATUSES,
    COMPLETION_FIELDS,
    SUPERSEDED_ERROR,
    TERMINAL_STATUSES,
    CancelAction,
    DisconnectMode,
    MultitaskStrategy,
    RunRecord,
    RunStatus,
    can_transition,
    parse_status,
    parse_strategy,
    validate_thread_id,
)
from runlane.runtime.runs.store.base import RunStore

__all__ = ["RESTART_ERROR", "PersistenceRetryPolicy", "RunManager", "Work"]

logger = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _default_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _check_json(name: str, value: Any) -> None:
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise InvalidPayloadError(f"Run {name} is not JSON-serialisable: {exc}") from None


class RunManager(Ownership):
    """Lifecycle of the runs this process owns; see the module docstring."""

    def __init__(
        self,
        store: RunStore | None = None,
        *,
        persistence_retry_policy: PersistenceRetryPolicy | None = None,
        owner_id: str | None = None,
        lease_ttl: float = 10.0,
        eviction_delay: float = 60.0,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: wall time for leases (None: the database's clock);
        ``monotonic``: how long since the last confirmed renewal."""
        super().__init__(
            store,
            persistence_retry_policy or PersistenceRetryPolicy(),
            owner_id=owner_id or _default_owner_id(),
            lease_ttl=lease_ttl,
            eviction_delay=eviction_delay,
            clock=clock,
            monotonic=monotonic,
        )

    # -- store access ---------------------------------------------------------

    def _new_record(
        self,
        thread_id: str,
        assistant_id: str | None,
        *,
        user_id: str | None,
        on_disconnect: DisconnectMode | str,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any] | None,
        multitask_strategy: MultitaskStrategy,
        model_name: str | None,
        run_id: str | None,
    ) -> RunRecord:
        validate_thread_id(thread_id)
        _check_json("metadata", metadata or {})
        _check_json("kwargs", kwargs or {})
        now = _now_iso()
        return RunRecord(
            run_id=run_id or str(uuid.uuid4()),
            thread_id=thread_id,
            assistant_id=assistant_id,
            user_id=user_id,
            on_disconnect=DisconnectMode(on_disconnect),
            multitask_strategy=multitask_strategy.value,
            metadata=dict(metadata or {}),
            kwargs=dict(kwargs or {}),
            model_name=model_name,
            created_at=now,
            updated_at=now,
            owner_id=self.owner_id,
            lease_expires_at=(self._local_now() + self._lease_ttl).isoformat(),
        )

    # -- creating runs ----------------------------------------------------------

    async def create(
        self,
        thread_id: str,
        assistant_id: str | None = None,
        *,
        user_id: str | None = None,
        on_disconnect: DisconnectMode | str = DisconnectMode.cancel,
        metadata: dict[str, Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        multitask_strategy: str = MultitaskStrategy.reject.value,
        model_name: str | None = None,
    ) -> RunRecord:
        """Record a new ``pending`` run without lane admission.

        For imports and tests that drive statuses by hand; requests go through
        :meth:`create_or_reject`. A SQL store still refuses a second active
        run on the thread with ConflictError.
        """
        record = self._new_record(
            thread_id,
            assistant_id,
            user_id=user_id,
            on_disconnect=on_disconnect,
            metadata=metadata,
            kwargs=kwargs,
            multitask_strategy=parse_strategy(multitask_strategy),
            model_name=model_name,
            run_id=None,
        )
        if self._store is not None:
            try:
                await self._retry(
                    self._store.put, record.run_id, thread_id=thread_id, **row_from_record(record)
                )
            except ConflictError:
                raise
            except Exception as exc:
                raise StoreUnavailableError() from exc
        self._runs[record.run_id] = record
        return record

    async def create_or_reject(
        self,
        thread_id: str,
        assistant_id: str | None = None,
        *,
        user_id: str | None = None,
        on_disconnect: DisconnectMode | str = DisconnectMode.cancel,
        metadata: dict[str, Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        multitask_strategy: str = MultitaskStrategy.reject.value,
        model_name: str | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Admit a new run into its thread's lane under ``multitask_strategy``.

        Raises ConflictError (``reject`` on a busy thread),
        UnsupportedStrategyError, InvalidThreadIdError, InvalidPayloadError,
        or StoreUnavailableError; in each case nothing was written. The
        returned record is ``pending``; ``record.queued`` says whether it
        waits behind another run. Runs it pre-empted are ``interrupted``.
        """
        if self.draining:
            raise ShuttingDownError()
        strategy = parse_strategy(multitask_strategy)
        record = self._new_record(
            thread_id,
            assistant_id,
            user_id=user_id,
            on_disconnect=on_disconnect,
            metadata=metadata,
            kwargs=kwargs,
            multitask_strategy=strategy,
            model_name=model_name,
            run_id=run_id,
        )
        if self._store is None:
            record.queued, preempted = self._admit_locally(record, strategy)
        else:
            try:
                admission = await self._retry(
                    self._store.admit,
                    record.run_id,
                    thread_id=thread_id,
                    strategy=strategy,
                    **row_from_record(record),
                )
            except ConflictError:
                raise
            except Exception as exc:
                raise StoreUnavailableError() from exc
            record.queued, preempted = admission.queued, list(admission.preempted)
            if record.queued:
                record.owner_id = record.lease_expires_at = None  # as stored: nobody's yet
        record.preempted = tuple(preempted)
        self._runs[record.run_id] = record
        for other_id in preempted:
            other = self._runs.get(other_id)
            if other is not None and other.is_active:
                self._abort_locally(other, CancelAction(strategy.value), SUPERSEDED_ERROR)
                if other.task is None:
                    self._finish_unstarted_soon(other)
                if self._store is None:
                    self._schedule_eviction(other)
        return record

    # -- status ---------------------------------------------------------------

    def _owned(self, run_id: str) -> RunRecord:
        record = self._runs.get(run_id)
        if record is None:
            raise RunNotFoundError(f"Run {run_id} is not owned by this process.")
        return record

    async def _persist_status(self, record: RunRecord) -> bool:
        return True if self._writer is None else await self._writer.status(record)

    async def set_status(
        self, run_id: str, status: RunStatus | str, *, error: str | None = None
    ) -> bool:
        """Move a local run to ``status`` and persist it.

        Returns False when the transition is not allowed (a terminal status
        never changes) or the store holds a different terminal status.
        Raises InvalidStatusError for an unknown status and RunNotFoundError
        for a run this process does not own; neither writes anything.
        """
        new = parse_status(status)
        record = self._owned(run_id)
        if record.fenced:
            return False
        if not can_transition(record.status, new):
            logger.info("run %s: ignoring %s -> %s", run_id, record.status.value, new.value)
            return False
        record.status = new
        if error is not None:
            record.error = error
        record.updated_at = _now_iso()
        persisted = await self._persist_status(record)
        if new in TERMINAL_STATUSES:
            await self._ended(record)
        return persisted

    async def update_run_completion(
        self, run_id: str, *, status: RunStatus | str, **stats: Any
    ) -> bool:
        """Write the final status with the run's completion statistics.

        ``stats`` keys: ``COMPLETION_FIELDS``, ``error`` and ``stop_reason``.
        A missing row is recreated and the write retried once; a zero-row
        result after that is logged as a warning. Returns whether the store
        holds the statistics.
        """
        new = parse_status(status)
        unknown = set(stats) - {*COMPLETION_FIELDS, "error", "stop_reason"}
        if unknown:
            raise TypeError(f"unknown completion fields: {', '.join(sorted(unknown))}")
        record = self._owned(run_id)
        if record.fenced:
            return False
        if can_transition(record.status, new):
            record.status = new
        for name, value in stats.items():
            setattr(record, name, value)
        record.updated_at = _now_iso()
        if self._writer is None:
            return True
        return await self._writer.completion(record, new.value, stats)

    # -- cancel ---------------------------------------------------------------

    async def cancel(
        self,
        run_id: str,
        *,
        action: CancelAction | str = CancelAction.interrupt,
        user_id: str | None = None,
    ) -> bool:
        """Cancel a run; True if it is (now or already) ``interrupted``.

        Idempotent, and the first action wins: a second cancel changes
        nothing. A run that has not started never starts. False for a run
        that already ended otherwise, or that is unknown.
        """
        action = CancelAction(action)
        record = self._runs.get(run_id)
        if record is not None and user_id is not None and record.user_id != user_id:
            return False
        if record is not None and record.queued and self._store is not None and record.is_active:
            # The row decides: another process may have claimed the run already.
            self._evict(run_id)
            return await self._cancel_remote(run_id, action, user_id, local=record)
        if record is None:
            return await self._cancel_remote(run_id, action, user_id)
        if record.status == RunStatus.interrupted:
            return True
        if not record.is_active:
            return False
        if self._store is not None:
            try:
                winner = await self._retry(
                    self._store.request_cancel, run_id, action, now=self._local_now()
                )
            except Exception:
                logger.exception("run %s: could not record the cancel durably", run_id)
                winner = None
            action = winner or action
        record.cancel_action = action
        running = record.status == RunStatus.running
        self._abort_locally(record, action, None, stop=False)
        # Persist before stopping the work: the caller may be that work.
        await self._persist_status(record)
        if running:
            self._stop_work(record)
        await self._ended(record)
        return True

    async def _cancel_remote(
        self,
        run_id: str,
        action: CancelAction,
        user_id: str | None,
        *,
        local: RunRecord | None = None,
    ) -> bool:
        if self._store is None:
            return False
        row = await self._retry(self._store.get, run_id, user_id=user_id)
        if row is None:
            return False
        if row["status"] == RunStatus.interrupted:
            return True
        now = self._local_now()
        if row["status"] == RunStatus.pending:
            # Not started: it never will. Its owner (if it has one yet) sees
            # its start refused and ends its stream; a queued run has no
            # owner, so this process does.
            await self._retry(self._store.request_cancel, run_id, action, now=now)
            if not await self._retry(self._store.update_status, run_id, "interrupted"):
                return await self._is_interrupted(run_id)
            if row["queued"]:
                record = local or record_from_row(row)
                record.status, record.cancel_action = RunStatus.interrupted, action
                record.abort_action = action
                record.abort_event.set()
                await self._finish_unstarted(record)
            return True
        if row["status"] == RunStatus.running:
            # The owner is told at once (a notification) or at its next renewal.
            won = await self._retry(self._store.request_cancel, run_id, action, now=now)
            return won is not None
        return False

    async def _is_interrupted(self, run_id: str) -> bool:
        assert self._store is not None
        row = await self._retry(self._store.get, run_id)
        return row is not None and row["status"] == RunStatus.interrupted

    # -- reads ----------------------------------------------------------------

    async def get(self, run_id: str, *, user_id: str | None = None) -> RunRecord | None:
        """The local record, else the store's row as a ``store_only`` record.

        With ``user_id``, another user's run reads as None. A store failure
        is logged and reads as None.
        """
        record = self._runs.get(run_id)
        if record is not None:
            return record if user_id is None or record.user_id == user_id else None
        if self._store is None:
            return None
        try:
            row = await self._store.get(run_id, user_id=user_id)
        except Exception:
            logger.exception("run %s: store read failed", run_id)
            return None
        # A create may have registered the run while we awaited the store.
        return self._runs.get(run_id) or (record_from_row(row) if row else None)

    async def aget(self, run_id: str, *, user_id: str | None = None) -> RunRecord | None:
        """Same as :meth:`get`."""
        return await self.get(run_id, user_id=user_id)

    async def list_by_thread(
        self, thread_id: str, *, user_id: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """The thread's runs, newest first; local records win over store rows."""
        local = [
            r for r in self._thread_records(thread_id) if user_id is None or r.user_id == user_id
        ]
        merged = {r.run_id: r for r in local}
        if self._store is not None:
            try:
                rows = await self._store.list_by_thread(
                    thread_id, user_id=user_id, limit=limit + len(local)
                )
            except Exception:
                logger.exception("thread %s: store list failed", thread_id)
                rows = []
            for row in rows:
                merged.setdefault(row["run_id"], record_from_row(row))
        # sorted() is stable, so equal timestamps keep insertion order.
        ordered = sorted(
            merged.values(), key=lambda r: datetime.fromisoformat(r.created_at), reverse=True
        )
        return ordered[:limit]

    async def has_inflight(self, thread_id: str) -> bool:
        """Whether the thread has a pending or running run."""
        if any(r.is_active for r in self._thread_records(thread_id)):
            return True
        if self._store is None:
            return False
        return await self._retry(self._store.has_active, thread_id)

    async def delete(self, run_id: str) -> bool:
        """Delete an ended run's row and forget its local record; False if unknown.

        Raises ConflictError for a pending or running run: cancel it first.
        """
        record = self._runs.get(run_id)
        if record is not None and record.is_active:
            raise ConflictError(f"Run {run_id} is {record.status.value}: cancel it first.")
        deleted = record is not None
        if self._store is not None:
            row = await self._retry(self._store.get, run_id)
            if row is not None and (row["status"] or RunStatus.pending) in ACTIVE_STATUSES:
                raise ConflictError(f"Run {run_id} is {row['status']}: cancel it first.")
            deleted = await self._retry(self._store.delete, run_id) or deleted
        self._evict(run_id)
        return deleted

    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        """Forget the local record of ``run_id`` after ``delay`` seconds."""
        if delay > 0:
            await asyncio.sleep(delay)
        self._evict(run_id)

    async def close(self) -> None:
        """Stop renewing leases, interrupt the runs still going, drop all records.

        With :attr:`shares_store`, queued runs are left queued for the other
        processes instead of being interrupted.
        """
        self.draining = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        tasks = self.running_tasks()
        unstarted: list[RunRecord] = []
        for record in list(self._runs.values()):
            if record.queued and record.task is None and self.shares_store:
                # Nobody's run yet: a peer claims it (release_queues tells them).
                self._released_lanes.add(record.thread_id)
                self._evict(record.run_id)
                continue
            if record.is_active and not record.fenced:
                self._abort_locally(record, CancelAction.interrupt, RESTART_ERROR)
                await self._persist_status(record)
                if record.task is None:
                    unstarted.append(record)
        await asyncio.gather(*tasks, return_exceptions=True)
        for record in unstarted:
            await self._finish_unstarted(record)
        await asyncio.gather(*self._finishing, return_exceptions=True)
        for handle in self._evictions.values():
            handle.cancel()
        for run_id in list(self._runs):
            self._evict(run_id)
