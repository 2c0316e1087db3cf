"""Which graph reads a thread's checkpoints, and the state operations over it.

A thread's checkpoints can only be read through the graph that wrote them
(its channels decide what ``values`` and ``next`` are). The graph of a
thread is, first match wins: the ``graph_id`` in its latest checkpoint's
metadata, the thread's ``metadata.graph_id`` (the SDK's
``threads.create(graph_id=...)``), the graph of ``metadata.assistant_id``,
the graph of the assistant of the thread's newest run. A thread none of
these name has no state yet: reads return the empty state, writes are 409.
Reads go through the executor's own choice of graph (the ``graph_id`` runs
and updates stamp on checkpoints, else ``metadata.graph_id``); a state update
on a thread with no checkpoint yet also tries the assistant fallbacks.

Identity: every operation addresses the path's thread, root namespace; the
checkpoint a client names is reduced to its ``checkpoint_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from langgraph.errors import InvalidUpdateError

from runlane.exceptions import ConflictError, InvalidInputError
from runlane.executor import state as state_ops
from runlane.graphs import AssistantNotFoundError, GraphNotFoundError, resolve_assistant_id
from runlane.server.services import Services

__all__ = [
    "copy_checkpoints",
    "graph_id_for_thread",
    "history",
    "keep_latest",
    "open_thread_graph",
    "state",
    "update",
]


async def _assistant_graph(services: Services, assistant_id: Any) -> str | None:
    if not isinstance(assistant_id, str):
        return None
    try:
        resolved = resolve_assistant_id(assistant_id, services.registry.graph_ids)
    except AssistantNotFoundError:
        return None
    assistant = await services.assistants.get(resolved)
    graph_id = assistant.get("graph_id") if assistant else None
    return graph_id if isinstance(graph_id, str) and graph_id in services.registry else None


async def graph_id_for_thread(services: Services, thread_id: str) -> str | None:
    """The graph whose checkpoints the thread holds (module docstring), or None."""
    latest = await services.checkpointer.aget_tuple(state_ops.thread_config(thread_id))
    graph_id = (latest.metadata or {}).get("graph_id") if latest else None
    if isinstance(graph_id, str) and graph_id in services.registry:
        return graph_id
    thread = await services.threads.get(thread_id)
    metadata = (thread or {}).get("metadata") or {}
    graph_id = metadata.get("graph_id")
    if isinstance(graph_id, str) and graph_id in services.registry:
        return graph_id
    found = await _assistant_graph(services, metadata.get("assistant_id"))
    if found is not None:
        return found
    for record in await services.manager.list_by_thread(thread_id, limit=1):
        found = await _assistant_graph(services, record.assistant_id)
        if found is not None:
            return found
    return None


@asynccontextmanager
async def open_thread_graph(services: Services, thread_id: str) -> AsyncIterator[Any]:
    """The thread's graph bound to the checkpointer (executor's choice), or None if it has none."""
    async with AsyncExitStack() as stack:
        try:
            graph = await stack.enter_async_context(services.executor.graph_for_thread(thread_id))
        except GraphNotFoundError:
            graph = None
        yield graph


def _checkpoint_id(checkpoint: dict[str, Any] | None) -> str | None:
    if not checkpoint:
        return None
    if checkpoint.get("checkpoint_ns"):
        raise InvalidInputError("checkpoint_ns: only the root namespace ('') can be addressed.")
    checkpoint_id = checkpoint.get("checkpoint_id")
    if checkpoint_id is not None and not isinstance(checkpoint_id, str):
        raise InvalidInputError("checkpoint_id must be a string.")
    return checkpoint_id


async def state(
    services: Services,
    thread_id: str,
    *,
    checkpoint: dict[str, Any] | None = None,
    subgraphs: bool = False,
) -> dict[str, Any]:
    """The ThreadState now (or at ``checkpoint``); the empty state without a graph."""
    return await services.executor.thread_state(
        thread_id, checkpoint_id=_checkpoint_id(checkpoint), subgraphs=subgraphs
    )


async def history(
    services: Services,
    thread_id: str,
    *,
    limit: int,
    before: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    checkpoint: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` ThreadStates, newest first."""
    before_id = _checkpoint_id(before)
    checkpoint_id = _checkpoint_id(checkpoint)
    async with open_thread_graph(services, thread_id) as graph:
        if graph is None:
            return []
        return await state_ops.get_history(
            graph,
            thread_id,
            limit=limit,
            before=before_id,
            metadata=metadata,
            checkpoint_id=checkpoint_id,
        )


async def update(
    services: Services,
    thread_id: str,
    *,
    values: Any,
    as_node: str | None,
    checkpoint: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write ``values`` as ``as_node`` (the executor then refreshes the thread status).

    Returns ``{"checkpoint": ...}`` of the new checkpoint; 409 for a thread
    without a graph, 422 for an update LangGraph refuses (unknown node...).
    """
    checkpoint_id = _checkpoint_id(checkpoint)
    graph_id = await graph_id_for_thread(services, thread_id)
    if graph_id is None:
        raise ConflictError(
            "The thread has no graph yet: run it once, or create it with "
            "metadata graph_id, before updating its state."
        )
    try:
        return await services.executor.update_state(
            thread_id, values, as_node=as_node, checkpoint_id=checkpoint_id, graph_id=graph_id
        )
    except (InvalidUpdateError, ValueError, KeyError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        # LangGraph reports an unknown node or an ambiguous update this way.
        raise InvalidInputError(f"The state update was refused: {exc}") from None


async def copy_checkpoints(services: Services, source: str, target: str) -> None:
    """Copy every checkpoint of ``source`` to ``target``; on failure none remain."""
    try:
        await state_ops.copy_thread(services.checkpointer, source, target)
    except BaseException:
        await services.checkpointer.adelete_thread(target)
        raise


async def keep_latest(services: Services, thread_ids: list[str]) -> None:
    """Drop every checkpoint but the newest of each thread; 422 if the saver cannot."""
    try:
        await services.checkpointer.aprune(thread_ids, strategy="keep_latest")
    except NotImplementedError:
        raise InvalidInputError(
            "strategy: keep_latest is not supported by this checkpointer; use delete."
        ) from None
