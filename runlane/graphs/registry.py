"""The graphs a server can run, by graph id.

Loading is eager: :meth:`GraphRegistry.from_config` imports every graph's
module when the server starts, so a broken ``langgraph.json`` or graph file
stops the start with a :class:`~runlane.graphs.config.GraphConfigError`
instead of failing the first run. What each id holds:

==============================  ==============================================
the attribute is                what the registry does
==============================  ==============================================
a compiled graph (``Pregel``)   kept; each request gets a copy bound to the
                                request's checkpointer and store
a ``StateGraph`` builder        compiled once at registration, then as above
a factory (a callable)          called for every request, with the run's
                                ``RunnableConfig`` if it takes a parameter;
                                may be sync or async and may return a compiled
                                graph, a builder, or a (sync or async) context
                                manager yielding either
==============================  ==============================================

The cached graph is never mutated: requests only ever see copies.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore

from runlane.exceptions import RunlaneError
from runlane.graphs.config import (
    GraphConfigError,
    LanggraphConfig,
    apply_config,
    import_graph_object,
)

__all__ = ["GraphNotFoundError", "GraphRegistry", "RegisteredGraph"]


class GraphNotFoundError(RunlaneError, LookupError):
    """No graph has this id. Check the graph ids in langgraph.json."""


@dataclass(frozen=True)
class RegisteredGraph:
    """One registry entry: exactly one of ``graph`` (compiled) and ``factory`` is set."""

    graph_id: str
    graph: Pregel[Any, Any, Any, Any] | None = None
    factory: Any = None
    description: str | None = None
    source: str | None = None


class GraphRegistry:
    """Graph id -> graph, builder-compiled or factory-produced per request."""

    def __init__(self) -> None:
        self._entries: dict[str, RegisteredGraph] = {}

    @classmethod
    def from_config(cls, config: LanggraphConfig, *, apply: bool = True) -> GraphRegistry:
        """Import every graph in ``config`` (after :func:`apply_config` unless ``apply=False``)."""
        if apply:
            apply_config(config)
        registry = cls()
        for spec in config.graphs.values():
            registry.register(
                spec.graph_id,
                import_graph_object(spec),
                description=spec.description,
                source=spec.target,
            )
        return registry

    @classmethod
    def from_objects(cls, graphs: Mapping[str, object]) -> GraphRegistry:
        """A registry over objects already in hand (embedding, tests)."""
        registry = cls()
        for graph_id, obj in graphs.items():
            registry.register(graph_id, obj)
        return registry

    def register(
        self,
        graph_id: str,
        obj: object,
        *,
        description: str | None = None,
        source: str | None = None,
    ) -> None:
        """Add or replace ``graph_id``; a builder is compiled here, once.

        Raises :class:`GraphConfigError` if ``obj`` is neither a graph, a
        builder nor a callable, or the builder does not compile.
        """
        where = f"graph {graph_id!r}" + (f" ({source})" if source else "")
        if isinstance(obj, Pregel):
            entry = RegisteredGraph(graph_id, graph=obj, description=description, source=source)
        elif isinstance(obj, StateGraph):
            try:
                compiled = obj.compile()
            except Exception as exc:
                raise GraphConfigError(f"{where}: compiling the StateGraph failed: {exc}") from exc
            entry = RegisteredGraph(
                graph_id, graph=compiled, description=description, source=source
            )
        elif callable(obj):
            entry = RegisteredGraph(graph_id, factory=obj, description=description, source=source)
        else:
            raise GraphConfigError(
                f"{where}: expected a compiled graph, a StateGraph or a factory, "
                f"got {type(obj).__name__}"
            )
        self._entries[graph_id] = entry

    @property
    def graph_ids(self) -> tuple[str, ...]:
        """Registered ids, in registration (``langgraph.json``) order."""
        return tuple(self._entries)

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, graph_id: str) -> RegisteredGraph:
        """The entry for ``graph_id``; :class:`GraphNotFoundError` if there is none."""
        try:
            return self._entries[graph_id]
        except KeyError:
            raise GraphNotFoundError(f"no graph has the id {graph_id!r}") from None

    async def get_graph(
        self,
        graph_id: str,
        config: RunnableConfig | None = None,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        store: BaseStore | None = None,
    ) -> Pregel[Any, Any, Any, Any]:
        """A compiled graph for one request, bound to ``checkpointer`` and ``store``.

        ``None`` for either keeps what the graph was compiled with. A factory
        that yields a context manager is entered and exited before this
        returns, which suits introspection (schemas, drawing); to run such a
        graph use :meth:`graph_for_run`, which keeps the context open.
        """
        async with self.graph_for_run(
            graph_id, config, checkpointer=checkpointer, store=store
        ) as graph:
            return graph

    @asynccontextmanager
    async def graph_for_run(
        self,
        graph_id: str,
        config: RunnableConfig | None = None,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        store: BaseStore | None = None,
    ) -> AsyncIterator[Pregel[Any, Any, Any, Any]]:
        """Like :meth:`get_graph`, keeping a context-manager factory open while in use."""
        entry = self.entry(graph_id)
        if entry.graph is not None:
            yield _bind(entry.graph, checkpointer, store)
            return
        where = f"graph {graph_id!r}" + (f" ({entry.source})" if entry.source else "")
        produced = await _call_factory(entry.factory, config or {}, where)
        if isinstance(produced, AbstractAsyncContextManager):
            async with produced as inner:
                yield _bind(_as_graph(inner, where), checkpointer, store)
        elif isinstance(produced, AbstractContextManager):
            with produced as inner:
                yield _bind(_as_graph(inner, where), checkpointer, store)
        else:
            yield _bind(_as_graph(produced, where), checkpointer, store)


async def _call_factory(factory: Any, config: RunnableConfig, where: str) -> object:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    takes_config = parameters is None or any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )
    try:
        result = factory(config) if takes_config else factory()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        raise GraphConfigError(f"{where}: the graph factory raised {exc!r}") from exc
    return result


def _as_graph(obj: object, where: str) -> Pregel[Any, Any, Any, Any]:
    if isinstance(obj, Pregel):
        return obj
    if isinstance(obj, StateGraph):
        return obj.compile()
    raise GraphConfigError(
        f"{where}: the factory returned {type(obj).__name__}, "
        "expected a compiled graph or a StateGraph"
    )


def _bind(
    graph: Pregel[Any, Any, Any, Any],
    checkpointer: BaseCheckpointSaver[Any] | None,
    store: BaseStore | None,
) -> Pregel[Any, Any, Any, Any]:
    update: dict[str, Any] = {}
    if checkpointer is not None:
        update["checkpointer"] = checkpointer
    if store is not None:
        update["store"] = store
    return graph.copy(update=update)
