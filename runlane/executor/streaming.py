"""Stream modes: from a run's requested modes to LangGraph's, and chunks to events.

Request modes map to LangGraph's ``astream`` modes (``messages-tuple`` and the
legacy ``messages`` both read LangGraph's ``messages``); ``events`` runs the
graph through ``astream_events(version="v2")`` and takes the other modes'
chunks from the root graph's ``on_chain_stream`` events, so one execution
feeds every mode.

Event names (the SSE ``event:`` field): the mode's own name, ``messages`` for
``messages-tuple`` (data ``[message, metadata]``), and for legacy ``messages``
``messages/metadata`` (once per message id), ``messages/partial`` (the chunk
accumulated so far) or ``messages/complete`` (a whole message). With
``stream_subgraphs`` an event from a subgraph is named ``mode|ns1|ns2``; the
legacy ``messages/*`` names never carry a namespace.

:class:`OutputCollector` folds a run's published events into the wait/join
body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_HIDDEN
from langgraph.pregel import Pregel
from langgraph.types import StreamMode

from runlane.executor.request import STREAM_MODES

__all__ = [
    "EVENTS_MODE",
    "ChunkMapper",
    "OutputCollector",
    "StreamPlan",
    "iterate_chunks",
    "plan_stream",
]

EVENTS_MODE = "events"
_GRAPH_MODE = {
    "values": "values",
    "updates": "updates",
    "messages-tuple": "messages",
    "messages": "messages",
    "custom": "custom",
    "debug": "debug",
    "tasks": "tasks",
    "checkpoints": "checkpoints",
}


@dataclass(frozen=True)
class StreamPlan:
    """What to ask LangGraph for, and what to publish."""

    requested: frozenset[str]
    graph_modes: tuple[str, ...]
    subgraphs: bool

    @property
    def events(self) -> bool:
        return EVENTS_MODE in self.requested


def plan_stream(stream_mode: Iterable[str], subgraphs: bool = False) -> StreamPlan:
    """The plan for a run's modes; ValueError names an unknown mode."""
    requested = frozenset(stream_mode) or frozenset({"values"})
    unknown = requested - STREAM_MODES
    if unknown:
        raise ValueError(f"unknown stream mode(s): {', '.join(sorted(unknown))}")
    graph_modes = tuple(sorted({_GRAPH_MODE[m] for m in requested if m in _GRAPH_MODE}))
    return StreamPlan(requested=requested, graph_modes=graph_modes, subgraphs=subgraphs)


def _split(item: Any, subgraphs: bool) -> tuple[tuple[str, ...], str, Any]:
    if subgraphs:
        ns, mode, chunk = item
        return tuple(ns), mode, chunk
    mode, chunk = item
    return (), mode, chunk


async def iterate_chunks(
    graph: Pregel[Any, Any, Any, Any],
    graph_input: Any,
    config: RunnableConfig,
    plan: StreamPlan,
    **kwargs: Any,
) -> AsyncIterator[tuple[tuple[str, ...], str, Any]]:
    """Yield ``(namespace, mode, chunk)``; mode ``events`` carries raw astream_events records.

    ``kwargs`` go to ``astream`` (context, interrupt_before/after, durability).
    """
    modes = cast(list[StreamMode], list(plan.graph_modes))
    if not plan.events:
        async for item in graph.astream(
            graph_input, config, stream_mode=modes, subgraphs=plan.subgraphs, **kwargs
        ):
            yield _split(item, plan.subgraphs)
        return
    async for event in graph.astream_events(
        graph_input, config, version="v2", stream_mode=modes, subgraphs=plan.subgraphs, **kwargs
    ):
        if TAG_HIDDEN in (event.get("tags") or ()):
            continue
        if event["event"] == "on_chain_stream" and not event.get("parent_ids") and modes:
            yield _split(event["data"]["chunk"], plan.subgraphs)
        yield (), EVENTS_MODE, event


class ChunkMapper:
    """Turns ``(namespace, mode, chunk)`` into the ``(event, data)`` pairs to publish.

    Keeps the per-run state the legacy ``messages`` mode needs (ids already
    announced, chunks accumulated so far). Data is returned as is; the caller
    encodes it once.
    """

    def __init__(self, plan: StreamPlan) -> None:
        self._plan = plan
        self._tuple = "messages-tuple" in plan.requested
        self._legacy = "messages" in plan.requested
        self._announced: set[str] = set()
        self._partial: dict[str, BaseMessageChunk] = {}

    def _name(self, mode: str, ns: tuple[str, ...]) -> str:
        if ns and self._plan.subgraphs:
            return "|".join((mode, *ns))
        return mode

    def map(self, ns: tuple[str, ...], mode: str, chunk: Any) -> list[tuple[str, Any]]:
        if mode == "messages":
            out: list[tuple[str, Any]] = []
            if self._tuple:
                out.append((self._name("messages", ns), chunk))
            if self._legacy:
                out.extend(self._legacy_messages(chunk))
            return out
        if mode == EVENTS_MODE or mode in self._plan.requested:
            return [(self._name(mode, ns), chunk)]
        return []

    def _legacy_messages(self, chunk: Any) -> list[tuple[str, Any]]:
        message, metadata = chunk
        if not isinstance(message, BaseMessage):
            return [("messages/complete", [message])]
        out: list[tuple[str, Any]] = []
        msg_id = message.id or ""
        if msg_id not in self._announced:
            self._announced.add(msg_id)
            out.append(("messages/metadata", {msg_id: {"metadata": metadata}}))
        if isinstance(message, BaseMessageChunk):
            previous = self._partial.get(msg_id)
            merged = message if previous is None else previous + message
            self._partial[msg_id] = merged
            out.append(("messages/partial", [merged]))
        else:
            self._partial.pop(msg_id, None)
            out.append(("messages/complete", [message]))
        return out


class OutputCollector:
    """Folds a run's published events into the wait/join body.

    ``values`` events replace the output (root graph only); a values chunk
    that holds only ``__interrupt__`` is merged into the last one, and so
    are several interrupt chunks. An ``error`` data event makes the body
    ``{"__error__": {"error", "message"}}``.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def add(self, event: str, data: Any) -> None:
        if event == "values" and isinstance(data, dict):
            if set(data) == {"__interrupt__"} and self.values is not None:
                merged = dict(self.values)
                merged["__interrupt__"] = [*merged.get("__interrupt__", []), *data["__interrupt__"]]
                self.values = merged
            else:
                self.values = data
        elif event == "error" and isinstance(data, dict):
            self.error = {"error": data.get("error"), "message": data.get("message")}

    def result(self) -> dict[str, Any] | None:
        """The body, or None when the run published no values (use the thread's)."""
        if self.error is not None:
            return {"__error__": self.error}
        return self.values
