"""The shipped example graphs stream deterministically, offline, with a checkpointer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import runlane.examples
from runlane.examples.agent import graph as agent_graph
from runlane.examples.agent import hitl_graph
from runlane.graphs import GraphRegistry, load_config

MODES = ["values", "updates", "messages", "custom"]


async def _stream(graph: Any, payload: Any, thread: str, **kwargs: Any) -> list[tuple[str, Any]]:
    config = {"configurable": {"thread_id": thread}}
    return [(mode, chunk) async for mode, chunk in graph.astream(payload, config, **kwargs)]


def _texts(events: list[tuple[str, Any]]) -> dict[str, Any]:
    tokens = [
        c[0].content for m, c in events if m == "messages" and isinstance(c[0], AIMessageChunk)
    ]
    final = [m for m, _ in events]
    last_values = [c for m, c in events if m == "values"][-1]
    return {
        "tokens": tokens,
        "modes": final,
        "custom": [c for m, c in events if m == "custom"],
        "updates": [next(iter(c)) for m, c in events if m == "updates"],
        "messages": [(type(m).__name__, m.text) for m in last_values["messages"]],
    }


@pytest.mark.anyio
async def test_agent_streams_every_mode_deterministically() -> None:
    # Loaded the way the server loads it: by file path from the shipped langgraph.json.
    config = load_config(Path(runlane.examples.__file__).parent / "langgraph.json")
    registry = GraphRegistry.from_config(config)
    runs = []
    for thread in ("a", "b"):
        graph = await registry.get_graph("agent", None, checkpointer=InMemorySaver())
        events = await _stream(
            graph,
            {"messages": [{"role": "user", "content": "one two three"}]},
            thread,
            stream_mode=MODES,
        )
        runs.append(_texts(events))

    first, second = runs
    assert first == second, "same input, same output"
    assert first["updates"] == ["agent", "tools", "agent"]
    assert first["custom"] == [{"tool": "count_words", "counted": i, "total": 3} for i in (1, 2, 3)]
    assert "".join(first["tokens"]) == (
        'Let me count the words.Your message "one two three" has 3 words.'
    )
    assert len(first["tokens"]) > 5, "the model streams token by token"
    assert first["messages"] == [
        ("HumanMessage", "one two three"),
        ("AIMessage", "Let me count the words."),
        ("ToolMessage", "3"),
        ("AIMessage", 'Your message "one two three" has 3 words.'),
    ]


@pytest.mark.anyio
async def test_agent_tool_call_streams_and_context_signs_the_answer() -> None:
    graph = agent_graph.copy(update={"checkpointer": InMemorySaver()})
    events = await _stream(
        graph,
        {"messages": [{"role": "user", "content": "hi"}]},
        "t",
        stream_mode=["messages", "values"],
        context={"signature": "-- runlane"},
    )
    calls = [
        call
        for mode, (message, _meta) in ((m, c) for m, c in events if m == "messages")
        if isinstance(message, AIMessageChunk)
        for call in message.tool_call_chunks
    ]
    assert [(c["name"], c["args"], c["id"]) for c in calls] == [
        ("count_words", '{"text": "hi"}', "call_1")
    ]
    final = [c for m, c in events if m == "values"][-1]["messages"]
    assert isinstance(final[2], ToolMessage)
    assert isinstance(final[-1], AIMessage)
    assert final[-1].text == 'Your message "hi" has 1 word. -- runlane'


@pytest.mark.anyio
async def test_agent_remembers_the_thread() -> None:
    graph = agent_graph.copy(update={"checkpointer": InMemorySaver()})
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"messages": [{"role": "user", "content": "a b"}]}, config)
    result = await graph.ainvoke({"messages": [{"role": "user", "content": "c"}]}, config)
    assert len(result["messages"]) == 8
    assert result["messages"][-1].text == 'Your message "c" has 1 word.'
    assert result["messages"][-3].tool_calls[0]["id"] == "call_2"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("decision", "approved", "verdict"),
    [
        ("yes", True, "Approved, done."),
        ({"approved": True}, True, "Approved, done."),
        ("no", False, "Rejected, nothing was done."),
    ],
)
async def test_hitl_interrupts_then_resumes(decision: Any, approved: bool, verdict: str) -> None:
    graph = hitl_graph.copy(update={"checkpointer": InMemorySaver()})
    first = await _stream(
        graph,
        {"messages": [{"role": "user", "content": "delete the logs"}]},
        "t",
        stream_mode=["updates", "values"],
    )
    interrupts = [c["__interrupt__"] for m, c in first if m == "updates" and "__interrupt__" in c]
    assert len(interrupts) == 1
    assert interrupts[0][0].value == {
        "question": "Approve this action?",
        "action": "I am about to: delete the logs. Approve?",
    }
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.next == ("review",)

    second = await _stream(graph, Command(resume=decision), "t", stream_mode=["values"])
    final = second[-1][1]
    assert final["approved"] is approved
    assert final["messages"][-1].text == verdict
    state = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.next == ()
