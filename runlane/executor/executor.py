"""RunExecutor: executes admitted runs and publishes what they stream.

Sequence of one run (see :meth:`RunExecutor.submit` and :meth:`RunExecutor.work`):

1. ``submit``: publish ``metadata`` (id "1", it creates the stream), mark the
   thread busy, hand :meth:`work` to the manager. A run cancelled before its
   work starts is finished by a watcher on its abort event: the graph is
   never opened, and the stream still gets its terminal entry.
2. ``work``: wait ``after_seconds`` (abortable), open the graph bound to the
   checkpointer, note the rollback point, stream every chunk to the bridge
   (each encoded once), then run the finalisation pipeline
   (:mod:`runlane.executor.finalize`). With an event store, a
   :class:`~runlane.executor.journal.RunJournal` callback handler records
   the run into the event log; the pipeline flushes it first.
3. Cancellation arrives as the manager cancelling the task. ``interrupt``
   keeps the checkpoints written so far; ``rollback`` restores the thread's
   pre-run checkpoint state and deletes the run's row after the terminal
   entry, as the reference server does.
4. A stateless (temporary) run's thread, checkpoints and runs are deleted
   after the terminal entry.

A graph that stops at ``interrupt()`` ends ``success`` and leaves the
thread ``interrupted``; an exception publishes ``error``
``{"error": ExcType, "message": str(exc)}`` and ends the run ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

from runlane.executor.checkpointer import RollbackPoint, capture_rollback_point, rollback_run
from runlane.executor.finalize import (
    PIPELINE,
    FinalizeContext,
    Step,
    UsageCounter,
    message_stats,
    run_finalization,
)
from runlane.executor.journal import RunJournal
from runlane.executor.journal_writer import WriterLimits
from runlane.executor.request import RunRequest, build_config, build_input
from runlane.executor.serialize import fragment
from runlane.executor.state import delete_thread_checkpoints, thread_config
from runlane.executor.streaming import ChunkMapper, iterate_chunks, plan_stream
from runlane.executor.views import ThreadViews
from runlane.graphs.registry import GraphRegistry
from runlane.runtime.events.base import EventStore
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import TERMINAL_STATUSES, CancelAction, RunRecord, RunStatus
from runlane.runtime.stream_bridge.base import StreamBridge, StreamEvent, StreamStatus
from runlane.runtime.threads.base import ThreadStatus, ThreadStore

__all__ = ["RunExecutor"]

logger = logging.getLogger(__name__)

Graph = Pregel[Any, Any, Any, Any]


class RunExecutor:
    """Runs the work of admitted runs; see the module docstring for the sequence."""

    def __init__(
        self,
        *,
        manager: RunManager,
        bridge: StreamBridge,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver[Any],
        threads: ThreadStore,
        store: BaseStore | None = None,
        events: EventStore | None = None,
        journal_limits: WriterLimits | None = None,
    ) -> None:
        self._manager = manager
        self._events = events
        self._journal_limits = journal_limits
        self._bridge = bridge
        self._registry = registry
        self._checkpointer = checkpointer
        self._threads = threads
        self._store = store
        self.views = ThreadViews(
            manager=manager,
            bridge=bridge,
            registry=registry,
            checkpointer=checkpointer,
            threads=threads,
            store=store,
        )
        # Work still executing, per thread: a run that pre-empts another
        # (multitask interrupt/rollback) starts at once, so it first waits
        # here until the pre-empted work has finished rolling back.
        self._executing: dict[str, dict[str, asyncio.Future[None]]] = {}
        self._journals: dict[str, RunJournal] = {}  # until their run's finalisation
        manager.bind(on_claimed=self._start_claimed, on_unstarted_end=self._finish_unstarted)

    # -- submitting -------------------------------------------------------------

    async def submit(self, record: RunRecord) -> None:
        """Open the run's stream with ``metadata``, mark the thread busy, start the run.

        ``metadata`` is published before the run can start, so it is always
        event "1" and every subscriber sees it. If that publish fails (bridge
        closed or full) the run is cancelled and the error re-raised. A
        queued run is left to whichever process frees its thread's lane; its
        ``metadata`` is stored before this returns, so it stays first even
        when another process runs it.
        """
        try:
            await self._bridge.publish(
                record.run_id,
                "metadata",
                {"run_id": record.run_id, "thread_id": record.thread_id, "attempt": 1},
            )
            if record.queued:
                await self._bridge.flush(record.run_id)
        except BaseException:
            # No stream, so no run: end it rather than leave it pending forever.
            await self._manager.cancel(record.run_id)
            raise
        await self._threads.set_status(record.thread_id, "busy")
        if record.queued:
            # The lane may have been freed while this run was admitted.
            await self._manager.dispatch(record.thread_id)
        else:
            self._manager.start(record.run_id, self.work)

    def _start_claimed(self, record: RunRecord) -> None:
        """Run a queued run this process claimed (its stream and thread are set up)."""
        self._manager.start(record.run_id, self.work)

    async def _finish_unstarted(self, record: RunRecord) -> None:
        """Finish a run whose work never ran: pipeline without stats, then cleanup."""
        try:
            request: RunRequest | None = RunRequest.from_kwargs(record.kwargs)
        except Exception:
            request = None
        graph_id = request.graph_id if request else None
        status = record.status if record.status in TERMINAL_STATUSES else RunStatus.interrupted
        ctx = FinalizeContext(
            run_id=record.run_id,
            thread_id=record.thread_id,
            status=status,
            manager=self._manager,
            bridge=self._bridge,
            threads=self._threads,
            waiting=lambda: self.views.thread_waiting(record.thread_id, graph_id),
            error=record.error,
        )
        await run_finalization(ctx, self._steps(record, self._rollback_requested(record)))
        await self._after_terminal(record, request)

    @staticmethod
    def _rollback_requested(record: RunRecord) -> bool:
        return record.abort_action == CancelAction.rollback

    # -- running ----------------------------------------------------------------

    async def work(self, record: RunRecord) -> None:
        """Execute one run; the ``Work`` given to ``RunManager.start``.

        Never raises except CancelledError (after finalising), so the
        manager sees the status this method decided.
        """
        executing = self._executing.setdefault(record.thread_id, {})
        prior = list(executing.values())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        executing[record.run_id] = done
        try:
            await self._execute(record, prior)
        finally:
            done.set_result(None)
            executing.pop(record.run_id, None)
            if not executing:
                self._executing.pop(record.thread_id, None)

    async def _execute(self, record: RunRecord, prior: list[asyncio.Future[None]]) -> None:
        status, error = RunStatus.success, None
        stats: dict[str, Any] = {}
        waiting: bool | None = None
        point: RollbackPoint | None = None
        request: RunRequest | None = None
        counter = UsageCounter()
        journal: RunJournal | None = None
        cancelled = False
        try:
            if prior:
                await asyncio.wait(prior)
            await self._await_remote_preempted(record)
            request = RunRequest.from_kwargs(record.kwargs)
            if request.after_seconds > 0:
                await self._delay(record, request.after_seconds)
            config = build_config(
                request, thread_id=record.thread_id, run_id=record.run_id, user_id=record.user_id
            )
            if self._events is not None:
                journal = RunJournal.for_run(self._events, record, request, self._journal_limits)
                self._journals[record.run_id] = journal
            config["callbacks"] = [journal if journal is not None else counter]
            plan = plan_stream(request.stream_mode, request.stream_subgraphs)
            async with self._registry.graph_for_run(
                request.graph_id, config, checkpointer=self._checkpointer, store=self._store
            ) as graph:
                if not request.temporary:
                    point = await self._rollback_point(record, request)
                mapper = ChunkMapper(plan)
                kwargs = self._stream_kwargs(request)
                async for ns, mode, chunk in iterate_chunks(
                    graph, build_input(request), config, plan, **kwargs
                ):
                    for event, data in mapper.map(ns, mode, chunk):
                        await self._bridge.publish(record.run_id, event, fragment(data))
                snapshot = await graph.aget_state(thread_config(record.thread_id))
                waiting = bool(snapshot.next or snapshot.interrupts)
                stats = message_stats(snapshot.values)
        except asyncio.CancelledError:
            cancelled = True
        except Exception as exc:
            status, error = RunStatus.error, str(exc)
            if journal is not None:
                journal.record_error(exc)
            await self._publish_error(record.run_id, exc)
        stats.update(counter.stats())
        finish = self._finish(
            record, request, status, error, stats, waiting, point, cancelled=cancelled
        )
        if cancelled:
            # A second cancel must not cut the pipeline short.
            await asyncio.shield(finish)
            raise asyncio.CancelledError
        await finish

    async def _await_remote_preempted(self, record: RunRecord) -> None:
        """Wait until the runs this one pre-empted on other processes have ended their streams.

        Their owners stop them on a notification (or their next lease
        renewal) and roll them back first when asked, so this run starts
        on the thread state they leave. An owner that died never ends its
        stream: after two lease TTLs this run goes ahead.
        """
        local = self._executing.get(record.thread_id, {})
        remote = [run_id for run_id in record.preempted if run_id not in local]
        if not remote:
            return
        waits = [self._stream_ended(run_id) for run_id in remote]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 2 * self._manager.lease_ttl)
        except TimeoutError:
            logger.warning("run %s: pre-empted runs did not end in time", record.run_id)

    async def _stream_ended(self, run_id: str) -> None:
        cursor = await self._bridge.latest_event_id(run_id)
        if await self._bridge.get_status(run_id) != StreamStatus.ACTIVE:
            return
        async for event in self._bridge.subscribe(run_id, last_event_id=cursor):
            if isinstance(event, StreamEvent) and event.terminal:
                return

    @staticmethod
    async def _delay(record: RunRecord, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.abort_event.wait(), seconds)
        if record.abort_event.is_set():
            raise asyncio.CancelledError

    async def _rollback_point(self, record: RunRecord, request: RunRequest) -> RollbackPoint | None:
        fork = (request.checkpoint or {}).get("checkpoint_id")
        try:
            return await capture_rollback_point(self._checkpointer, record.thread_id, fork)
        except NotImplementedError:
            return None

    @staticmethod
    def _stream_kwargs(request: RunRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if request.context:
            kwargs["context"] = request.context
        if request.interrupt_before is not None:
            kwargs["interrupt_before"] = request.interrupt_before
        if request.interrupt_after is not None:
            kwargs["interrupt_after"] = request.interrupt_after
        if request.durability is not None:
            kwargs["durability"] = request.durability
        return kwargs

    async def _publish_error(self, run_id: str, exc: Exception) -> None:
        try:
            await self._bridge.publish(
                run_id, "error", {"error": type(exc).__name__, "message": str(exc)}
            )
        except Exception:
            logger.exception("run %s: could not publish its error event", run_id)

    async def _finish(
        self,
        record: RunRecord,
        request: RunRequest | None,
        status: RunStatus,
        error: str | None,
        stats: dict[str, Any],
        waiting: bool | None,
        point: RollbackPoint | None,
        *,
        cancelled: bool,
    ) -> None:
        if record.fenced:
            # Another process ended or took this run: it writes the outcome.
            logger.warning("run %s: stopped without writing (no longer ours)", record.run_id)
            return
        rolled_back = cancelled and self._rollback_requested(record)
        if rolled_back and point is not None:
            try:
                await rollback_run(self._checkpointer, point, record.run_id)
            except Exception:
                logger.exception("run %s: rollback failed; checkpoints kept", record.run_id)
            waiting = None
        if cancelled:
            status, waiting = RunStatus.interrupted, None
        graph_id = request.graph_id if request else None

        async def is_waiting() -> bool:
            if waiting is not None:
                return waiting
            return await self.views.thread_waiting(record.thread_id, graph_id)

        ctx = FinalizeContext(
            run_id=record.run_id,
            thread_id=record.thread_id,
            status=status,
            manager=self._manager,
            bridge=self._bridge,
            threads=self._threads,
            waiting=is_waiting,
            error=error if error is not None else (record.error if cancelled else None),
            stats=stats,
            journal=self._journals.pop(record.run_id, None),
        )
        await run_finalization(ctx, self._steps(record, rolled_back))
        await self._after_terminal(record, request)

    def _steps(self, record: RunRecord, rolled_back: bool) -> Sequence[Step]:
        """The finalisation pipeline; a rolled-back run is deleted before its terminal entry,
        so a client that sees the stream end never finds the run again."""
        if not rolled_back:
            return PIPELINE

        async def delete_rolled_back_run(ctx: FinalizeContext) -> None:
            await self._delete_run(record.run_id)
            if self._events is not None:
                await self._events.delete_by_run(record.thread_id, record.run_id)

        return (*PIPELINE[:-1], delete_rolled_back_run, PIPELINE[-1])

    async def _after_terminal(self, record: RunRecord, request: RunRequest | None) -> None:
        """Deletions after the terminal entry: a temporary thread, its runs and events."""
        try:
            if request is not None and request.temporary:
                await delete_thread_checkpoints(self._checkpointer, record.thread_id)
                await self._threads.delete(record.thread_id)
                for other in await self._manager.list_by_thread(record.thread_id):
                    if not other.is_active:
                        await self._delete_run(other.run_id)
                if self._events is not None:
                    await self._events.delete_by_thread(record.thread_id)
        except Exception:
            logger.exception("run %s: cleanup after the terminal entry failed", record.run_id)

    async def _delete_run(self, run_id: str) -> None:
        await self._manager.delete(run_id)

    # -- thread state and output (see ThreadViews) -----------------------------------

    def graph_for_thread(
        self, thread_id: str, *, graph_id: str | None = None
    ) -> AbstractAsyncContextManager[Graph]:
        """See :meth:`ThreadViews.graph_for_thread`."""
        return self.views.graph_for_thread(thread_id, graph_id=graph_id)

    async def thread_state(
        self, thread_id: str, *, checkpoint_id: str | None = None, subgraphs: bool = False
    ) -> dict[str, Any]:
        """See :meth:`ThreadViews.thread_state`."""
        return await self.views.thread_state(
            thread_id, checkpoint_id=checkpoint_id, subgraphs=subgraphs
        )

    async def update_state(
        self,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
        graph_id: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`ThreadViews.update_state`."""
        return await self.views.update_state(
            thread_id, values, as_node=as_node, checkpoint_id=checkpoint_id, graph_id=graph_id
        )

    async def refresh_thread_status(self, thread_id: str) -> ThreadStatus:
        """See :meth:`ThreadViews.refresh_thread_status`."""
        return await self.views.refresh_thread_status(thread_id)

    async def wait_output(self, run_id: str, *, thread_id: str | None = None) -> dict[str, Any]:
        """See :meth:`ThreadViews.wait_output`."""
        return await self.views.wait_output(run_id, thread_id=thread_id)

    # -- orphans ----------------------------------------------------------------------

    async def recover_orphans(self, *, sole_process: bool = False) -> list[RunRecord]:
        """End the runs whose owner is gone (see ``reconcile_orphaned_inflight_runs``).

        Each one's stream gets its terminal ``error`` entry and its thread's
        status is recomputed (the manager already claimed its next queued run).
        Returns the recovered runs.
        """
        recovered = await self._manager.reconcile_orphaned_inflight_runs(sole_process=sole_process)
        for record in recovered:
            data = {"run_id": record.run_id, "status": "error", "error": record.error}
            try:
                await self._bridge.publish_terminal(record.run_id, StreamStatus.ERRORED, data)
            except Exception:
                logger.exception("run %s: could not end its stream", record.run_id)
        for thread_id in dict.fromkeys(r.thread_id for r in recovered):
            try:
                await self.refresh_thread_status(thread_id)
            except Exception:
                logger.exception("thread %s: could not refresh its status", thread_id)
        if recovered:
            logger.warning("recovered %d runs left active by a stopped process", len(recovered))
        return recovered
