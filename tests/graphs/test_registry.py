"""The graph registry: every attribute shape LangGraph allows, bound per request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from runlane.graphs import GraphConfigError, GraphNotFoundError, GraphRegistry, load_config
from tests.graphs.conftest import GRAPH_SOURCE


class State(TypedDict):
    n: int


def _builder(step: int = 1) -> StateGraph[State, Any, State, State]:
    def inc(state: State) -> dict[str, int]:
        return {"n": state["n"] + step}

    builder = StateGraph(State)
    builder.add_node("inc", inc)
    builder.add_edge(START, "inc")
    builder.add_edge("inc", END)
    return builder


async def _run(registry: GraphRegistry, graph_id: str, config: dict[str, Any] | None = None) -> int:
    graph = await registry.get_graph(graph_id, config)  # type: ignore[arg-type]
    result = await graph.ainvoke({"n": 0})
    return int(result["n"])


@pytest.fixture
def registry(tmp_path: Path) -> GraphRegistry:
    (tmp_path / "graphs.py").write_text(GRAPH_SOURCE)
    names = ["graph", "builder", "factory", "async_factory", "managed"]
    (tmp_path / "langgraph.json").write_text(
        json.dumps({"graphs": {name: f"./graphs.py:{name}" for name in names}})
    )
    return GraphRegistry.from_config(load_config(tmp_path / "langgraph.json"))


@pytest.mark.anyio
async def test_every_attribute_shape_from_a_config(registry: GraphRegistry) -> None:
    assert registry.graph_ids == ("graph", "builder", "factory", "async_factory", "managed")
    assert len(registry) == 5
    assert "graph" in registry
    assert list(registry) == list(registry.graph_ids)
    assert await _run(registry, "graph") == 1
    assert await _run(registry, "builder") == 1
    assert await _run(registry, "factory") == 10
    assert await _run(registry, "async_factory") == 100
    assert await _run(registry, "managed") == 1000
    assert registry.entry("factory").factory is not None
    assert registry.entry("builder").graph is not None
    assert registry.entry("graph").source == "./graphs.py:graph"


@pytest.mark.anyio
async def test_a_factory_gets_the_run_config_on_every_call() -> None:
    seen: list[Any] = []

    def factory(config: dict[str, Any]) -> Pregel[Any, Any, Any, Any]:
        seen.append(config)
        return _builder(config["configurable"]["step"]).compile()

    registry = GraphRegistry.from_objects({"g": factory})
    assert await _run(registry, "g", {"configurable": {"step": 2}}) == 2
    assert await _run(registry, "g", {"configurable": {"step": 3}}) == 3
    assert [c["configurable"]["step"] for c in seen] == [2, 3]


@pytest.mark.anyio
async def test_factories_sync_async_with_and_without_config() -> None:
    def no_args() -> StateGraph[State, Any, State, State]:
        return _builder(4)

    async def async_with_config(config: dict[str, Any]) -> Pregel[Any, Any, Any, Any]:
        return _builder(len(config)).compile()

    @contextmanager
    def sync_managed(config: dict[str, Any]) -> Iterator[Pregel[Any, Any, Any, Any]]:
        yield _builder(6).compile()

    registry = GraphRegistry.from_objects(
        {"none": no_args, "async": async_with_config, "cm": sync_managed}
    )
    assert await _run(registry, "none") == 4
    assert await _run(registry, "async", {"tags": [], "metadata": {}}) == 2
    assert await _run(registry, "async") == 0, "no config means an empty config"
    assert await _run(registry, "cm") == 6


@pytest.mark.anyio
async def test_graph_for_run_keeps_a_context_factory_open() -> None:
    events: list[str] = []

    @contextmanager
    def managed() -> Iterator[Pregel[Any, Any, Any, Any]]:
        events.append("enter")
        yield _builder().compile()
        events.append("exit")

    registry = GraphRegistry.from_objects({"g": managed})
    async with registry.graph_for_run("g") as graph:
        assert events == ["enter"]
        assert (await graph.ainvoke({"n": 1}))["n"] == 2
    assert events == ["enter", "exit"]


@pytest.mark.anyio
async def test_each_request_gets_a_copy_bound_to_its_checkpointer_and_store() -> None:
    compiled = _builder().compile()
    registry = GraphRegistry.from_objects({"g": compiled})
    saver, store = InMemorySaver(), InMemoryStore()

    bound = await registry.get_graph("g", None, checkpointer=saver, store=store)
    other = await registry.get_graph("g", None, checkpointer=InMemorySaver())

    assert bound is not compiled
    assert (bound.checkpointer, bound.store) == (saver, store)
    assert other.checkpointer is not saver
    assert compiled.checkpointer is None, "the registered graph is never mutated"
    config: Any = {"configurable": {"thread_id": "t"}}
    await bound.ainvoke({"n": 5}, config)
    assert (await bound.aget_state(config)).values == {"n": 6}


@pytest.mark.anyio
async def test_a_factory_output_is_bound_too() -> None:
    registry = GraphRegistry.from_objects({"g": lambda: _builder()})
    saver = InMemorySaver()
    assert (await registry.get_graph("g", checkpointer=saver)).checkpointer is saver


@pytest.mark.anyio
async def test_unknown_graph_id() -> None:
    registry = GraphRegistry.from_objects({"g": _builder()})
    with pytest.raises(GraphNotFoundError, match="'nope'"):
        await registry.get_graph("nope")


def test_an_attribute_that_is_no_graph_is_refused() -> None:
    with pytest.raises(GraphConfigError, match=r"graph 'g'.*got int"):
        GraphRegistry.from_objects({"g": 42})


def test_a_builder_that_does_not_compile_is_refused() -> None:
    builder = StateGraph(State)  # no nodes, no entry point
    with pytest.raises(GraphConfigError, match="graph 'g': compiling the StateGraph failed"):
        GraphRegistry.from_objects({"g": builder})


@pytest.mark.anyio
async def test_a_factory_that_returns_no_graph_or_raises() -> None:
    def fails() -> None:
        raise RuntimeError("no model key")

    registry = GraphRegistry.from_objects({"junk": lambda: "text", "fails": fails})
    with pytest.raises(GraphConfigError, match="graph 'junk': the factory returned str"):
        await registry.get_graph("junk")
    with pytest.raises(GraphConfigError, match="no model key"):
        await registry.get_graph("fails")
