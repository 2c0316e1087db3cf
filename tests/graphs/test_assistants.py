"""Default assistants: ids, resolution, schemas and drawing of the example graphs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

import runlane.examples
from runlane.examples.agent import graph as agent_graph
from runlane.examples.agent import hitl_graph
from runlane.graphs import (
    AssistantNotFoundError,
    GraphRegistry,
    default_assistant,
    default_assistant_id,
    draw_graph,
    graph_schemas,
    load_config,
    resolve_assistant_id,
    subgraph_schemas,
)

EXAMPLES_CONFIG = Path(runlane.examples.__file__).parent / "langgraph.json"


def test_default_assistant_id_matches_the_reference() -> None:
    assert default_assistant_id("agent") == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert default_assistant_id("hitl") != default_assistant_id("agent")


def test_resolution_accepts_a_graph_name_or_a_uuid() -> None:
    graphs = ["agent", "hitl"]
    agent_id = "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert resolve_assistant_id("agent", graphs) == agent_id
    assert resolve_assistant_id(agent_id, graphs) == agent_id
    assert resolve_assistant_id(agent_id.upper(), graphs) == agent_id
    assert resolve_assistant_id(UUID(agent_id).hex, graphs) == agent_id
    other = "00000000-0000-4000-8000-000000000001"
    assert resolve_assistant_id(other, graphs) == other, "uuids pass through unchecked"


def test_a_graph_named_like_a_uuid_resolves_to_its_assistant() -> None:
    name = "00000000-0000-4000-8000-000000000001"
    assert resolve_assistant_id(name, [name]) == default_assistant_id(name)


@pytest.mark.parametrize("value", ["nope", "", "agent "])
def test_resolution_refuses_anything_else(value: str) -> None:
    with pytest.raises(AssistantNotFoundError, match=repr(value)):
        resolve_assistant_id(value, ["agent"])


def test_default_assistant_shape() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assistant = default_assistant("agent", description="demo", now=now)
    assert assistant == {
        "assistant_id": "fe096781-5601-53d2-b2f6-0d3403f7e9ca",
        "graph_id": "agent",
        "config": {},
        "context": {},
        "created_at": now,
        "updated_at": now,
        "metadata": {"created_by": "system"},
        "version": 1,
        "name": "agent",
        "description": "demo",
    }
    assert default_assistant("x")["created_at"].tzinfo is not None


def test_the_shipped_config_loads_both_examples() -> None:
    config = load_config(EXAMPLES_CONFIG)
    registry = GraphRegistry.from_config(config)
    assert registry.graph_ids == ("agent", "hitl")
    assert registry.entry("agent").description
    assert [default_assistant(g)["assistant_id"] for g in registry.graph_ids] == [
        default_assistant_id("agent"),
        default_assistant_id("hitl"),
    ]


def test_schemas_of_the_agent_graph() -> None:
    schemas = graph_schemas(agent_graph, "agent")
    assert set(schemas) == {
        "graph_id",
        "input_schema",
        "output_schema",
        "state_schema",
        "config_schema",
        "context_schema",
    }
    assert schemas["graph_id"] == "agent"
    for key in ("input_schema", "output_schema", "state_schema"):
        assert "messages" in schemas[key]["properties"], key
    assert schemas["context_schema"]["properties"] == {
        "signature": {"title": "Signature", "type": "string"}
    }
    assert schemas["config_schema"]["type"] == "object"
    json.dumps(schemas)  # JSON-serialisable as is


def test_state_schema_lists_every_channel() -> None:
    state = graph_schemas(hitl_graph, "hitl")["state_schema"]
    assert set(state["properties"]) == {"messages", "approved"}


def test_a_graph_without_context_has_a_null_context_schema() -> None:
    class S(TypedDict):
        n: int

    builder = StateGraph(S)
    builder.add_node("noop", lambda s: s)
    builder.add_edge(START, "noop")
    builder.add_edge("noop", END)
    schemas = graph_schemas(builder.compile(), "plain")
    assert schemas["context_schema"] is None
    assert schemas["input_schema"]["properties"] == {"n": {"title": "N", "type": "integer"}}


def test_drawing_of_the_agent_graph() -> None:
    drawing = draw_graph(agent_graph)
    nodes = {node["id"] for node in drawing["nodes"]}
    assert nodes == {"__start__", "agent", "tools", "__end__"}
    edges = {(e["source"], e["target"], e.get("conditional", False)) for e in drawing["edges"]}
    assert ("__start__", "agent", False) in edges
    assert ("agent", "tools", True) in edges
    assert ("agent", "__end__", True) in edges
    assert ("tools", "agent", False) in edges
    json.dumps(drawing)


def test_xray_expands_subgraphs() -> None:
    class S(TypedDict):
        n: int

    inner = StateGraph(S)
    inner.add_node("step", lambda s: {"n": s["n"] + 1})
    inner.add_edge(START, "step")
    outer = StateGraph(S)
    outer.add_node("child", inner.compile())
    outer.add_edge(START, "child")
    outer.add_edge("child", END)
    parent = outer.compile()

    assert {n["id"] for n in draw_graph(parent)["nodes"]} == {"__start__", "child", "__end__"}
    assert "child:step" in {n["id"] for n in draw_graph(parent, xray=True)["nodes"]}
    assert list(subgraph_schemas(parent, "outer")) == ["child"]
    assert subgraph_schemas(parent, "outer")["child"]["graph_id"] == "outer"
