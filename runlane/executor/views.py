"""Read-side views of threads: their graph, state, status and a run's final output.

The HTTP layer reaches these through :class:`~runlane.executor.RunExecutor`
(``thread_state``, ``update_state``, ``refresh_thread_status``,
``wait_output``, ``graph_for_thread``). A thread's graph is the ``graph_id``
runs and state updates stamp on its checkpoints (else the thread row's
``metadata.graph_id``), so state is always read through the graph that
wrote it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

from runlane.executor.state import empty_state, get_state, thread_config, update_state
from runlane.executor.streaming import OutputCollector
from runlane.graphs.registry import GraphNotFoundError, GraphRegistry
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import RunStatus
from runlane.runtime.stream_bridge.base import StreamBridge, StreamGap
from runlane.runtime.threads.base import ThreadStatus, ThreadStore

__all__ = ["ThreadViews"]

Graph = Pregel[Any, Any, Any, Any]
_INTERRUPT_CHANNEL = "__interrupt__"


class ThreadViews:
    """Thread state, status and run output over the checkpointer and the bridge."""

    def __init__(
        self,
        *,
        manager: RunManager,
        bridge: StreamBridge,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver[Any],
        threads: ThreadStore,
        store: BaseStore | None = None,
    ) -> None:
        self._manager = manager
        self._bridge = bridge
        self._registry = registry
        self._checkpointer = checkpointer
        self._threads = threads
        self._store = store

    async def _graph_id_of(self, thread_id: str) -> str | None:
        """The graph recorded in the thread's newest checkpoint that names one.

        Runs and :meth:`update_state` stamp ``graph_id`` on every checkpoint
        they write; a checkpoint written otherwise (a direct ``aupdate_state``)
        lacks it, so the 20 newest are looked at, then the thread row.
        """
        async for item in self._checkpointer.alist(thread_config(thread_id), limit=20):
            graph_id = (item.metadata or {}).get("graph_id")
            if isinstance(graph_id, str):
                return graph_id
        row = await self._threads.get(thread_id)
        graph_id = ((row or {}).get("metadata") or {}).get("graph_id")
        return graph_id if isinstance(graph_id, str) else None

    @asynccontextmanager
    async def graph_for_thread(
        self, thread_id: str, *, graph_id: str | None = None
    ) -> AsyncIterator[Graph]:
        """The graph that runs on ``thread_id``, bound to the checkpointer and store.

        ``graph_id`` defaults to the one recorded in the thread's latest
        checkpoint; GraphNotFoundError when neither names a registered graph.
        """
        graph_id = graph_id or await self._graph_id_of(thread_id)
        if graph_id is None:
            raise GraphNotFoundError(f"thread {thread_id!r} has no graph yet")
        async with self._registry.graph_for_run(
            graph_id, thread_config(thread_id), checkpointer=self._checkpointer, store=self._store
        ) as graph:
            yield graph

    async def thread_state(
        self, thread_id: str, *, checkpoint_id: str | None = None, subgraphs: bool = False
    ) -> dict[str, Any]:
        """The thread's ThreadState dict (:func:`empty_state` without checkpoints)."""
        try:
            async with self.graph_for_thread(thread_id) as graph:
                return await get_state(
                    graph, thread_id, checkpoint_id=checkpoint_id, subgraphs=subgraphs
                )
        except GraphNotFoundError:
            return empty_state(thread_id)

    async def update_state(
        self,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
        graph_id: str | None = None,
    ) -> dict[str, Any]:
        """Write ``values`` to the thread's state, then refresh its status.

        Returns ``{"checkpoint": ...}``. ``graph_id`` is needed only for a
        thread that has no checkpoint yet.
        """
        gid = graph_id or await self._graph_id_of(thread_id)
        async with self.graph_for_thread(thread_id, graph_id=gid) as graph:
            result = await update_state(
                graph,
                thread_id,
                values,
                as_node=as_node,
                checkpoint_id=checkpoint_id,
                metadata={"graph_id": gid, "thread_id": thread_id},
            )
        await self.refresh_thread_status(thread_id)
        return result

    async def thread_waiting(self, thread_id: str, graph_id: str | None) -> bool:
        """Whether the thread's latest checkpoint has ``next`` nodes or interrupts."""
        try:
            async with self.graph_for_thread(thread_id, graph_id=graph_id) as graph:
                snapshot = await graph.aget_state(thread_config(thread_id))
                return bool(snapshot.next or snapshot.interrupts)
        except GraphNotFoundError:
            item = await self._checkpointer.aget_tuple(thread_config(thread_id))
            return bool(item and any(w[1] == _INTERRUPT_CHANNEL for w in item.pending_writes or ()))

    async def refresh_thread_status(self, thread_id: str) -> ThreadStatus:
        """Recompute and store the thread status (``busy``, ``interrupted`` or ``idle``).

        Through :meth:`ThreadStore.settle_status`: ``busy`` while a run of the
        thread is pending or running (also one admitted meanwhile), else
        ``interrupted`` when its latest checkpoint waits, else ``idle``.
        """
        status: ThreadStatus = (
            "interrupted" if await self.thread_waiting(thread_id, None) else "idle"
        )

        def has_active_run() -> Awaitable[bool]:
            return self._manager.has_inflight(thread_id)

        stored = await self._threads.settle_status(thread_id, status, has_active_run=has_active_run)
        return stored or status

    async def wait_output(self, run_id: str, *, thread_id: str | None = None) -> dict[str, Any]:
        """The wait/join body, once the run's stream has its terminal entry.

        The last ``values`` event (interrupt chunks merged in), or
        ``{"__error__": {"error", "message"}}`` for a failed run; without
        either, the thread's current values (with ``__interrupt__`` when it
        waits on interrupts), else ``{}``. A run whose stream is gone is read
        from the thread alone.
        """
        collector = OutputCollector()
        if await self._bridge.stream_exists(run_id) or await self._is_active(run_id):
            await self._collect(run_id, collector)
        result = collector.result()
        if result is not None:
            return result
        if thread_id is None:
            return {}
        state = await self.thread_state(thread_id)
        values = state.get("values")
        if not isinstance(values, dict):
            return {}
        if state.get("interrupts"):
            values = {**values, "__interrupt__": state["interrupts"]}
        return values

    async def _is_active(self, run_id: str) -> bool:
        record = await self._manager.get(run_id)
        return record is not None and record.is_active

    async def _collect(self, run_id: str, collector: OutputCollector) -> None:
        async for item in self._bridge.subscribe(
            run_id, last_event_id="0", heartbeat_interval=3600.0
        ):
            if isinstance(item, StreamGap):
                continue
            if not item.id:
                if item.event == "__heartbeat__":
                    continue
                return  # the stream was removed or the bridge closed
            if item.terminal:
                data = item.data if isinstance(item.data, dict) else {}
                if data.get("status") == RunStatus.error and collector.error is None:
                    collector.error = {"error": "RunError", "message": data.get("error")}
                return
            collector.add(item.event, item.data)
