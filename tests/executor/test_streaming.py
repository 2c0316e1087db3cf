"""Event sequences for every stream mode, through the whole executor stack."""

from __future__ import annotations

from typing import Any

import pytest

from runlane.executor.streaming import plan_stream
from runlane.runtime.runs.schemas import RunStatus
from runlane.runtime.stream_bridge.base import StreamEvent
from tests.executor.conftest import Stack

pytestmark = pytest.mark.anyio

HELLO = {"messages": [{"role": "user", "content": "hello there world"}]}


def check_frame(events: list[StreamEvent], run_id: str, thread_id: str, status: str) -> None:
    """metadata first as id 1, dense ids, one terminal entry last with the status."""
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert events[0].event == "metadata"
    assert events[0].data == {"run_id": run_id, "thread_id": thread_id, "attempt": 1}
    assert [e.terminal for e in events] == [False] * (len(events) - 1) + [True]
    assert events[-1].data["run_id"] == run_id
    assert events[-1].data["status"] == status
    if status == "success":
        assert events[-1].data["error"] is None


async def run_agent(stack: Stack, modes: list[str], **extra: Any) -> list[StreamEvent]:
    record = await stack.start("t1", "agent", input=HELLO, stream_mode=modes, **extra)
    events = await stack.events(record.run_id)
    check_frame(events, record.run_id, "t1", "success")
    assert events[-1].event == "end"
    return events[1:-1]


async def test_values_mode_streams_full_states(stack: Stack) -> None:
    body = await run_agent(stack, ["values"])
    assert {e.event for e in body} == {"values"}
    final = body[-1].data["messages"]
    assert [m["type"] for m in final] == ["human", "ai", "tool", "ai"]
    assert final[-1]["content"] == 'Your message "hello there world" has 3 words.'
    (record,) = await stack.manager.list_by_thread("t1")
    assert record.status == RunStatus.success
    assert record.message_count == 4
    assert record.llm_call_count == 2
    assert record.first_human_message == "hello there world"
    assert record.last_ai_message == 'Your message "hello there world" has 3 words.'
    assert await stack.thread_status("t1") == "idle"


async def test_updates_mode(stack: Stack) -> None:
    body = await run_agent(stack, ["updates"])
    assert [next(iter(e.data)) for e in body] == ["agent", "tools", "agent"]


async def test_messages_tuple_mode_is_named_messages(stack: Stack) -> None:
    body = await run_agent(stack, ["messages-tuple"])
    assert {e.event for e in body} == {"messages"}
    message, metadata = body[0].data
    assert message["type"] == "AIMessageChunk"
    assert message["content"] == "Let"
    assert metadata["langgraph_node"] == "agent"
    tokens = [m["content"] for m, _ in (e.data for e in body) if m["type"] == "AIMessageChunk"]
    assert "".join(tokens).startswith("Let me count the words.")


async def test_legacy_messages_mode(stack: Stack) -> None:
    body = await run_agent(stack, ["messages"])
    names = [e.event for e in body]
    assert names[0] == "messages/metadata"
    assert set(names) == {"messages/metadata", "messages/partial", "messages/complete"}
    first_id = next(iter(body[0].data))
    partials = [e.data[0] for e in body if e.event == "messages/partial"]
    # accumulated: each partial holds the whole text so far
    first_message = [p["content"] for p in partials if p["id"] == first_id]
    assert first_message[:3] == ["Let", "Let me", "Let me count"]
    complete = [e.data[0] for e in body if e.event == "messages/complete"]
    assert [m["type"] for m in complete] == ["tool"]
    announced = [next(iter(e.data)) for e in body if e.event == "messages/metadata"]
    assert len(announced) == len(set(announced)) == 3


async def test_custom_mode(stack: Stack) -> None:
    body = await run_agent(stack, ["custom"])
    assert [e.data for e in body] == [
        {"tool": "count_words", "counted": i, "total": 3} for i in (1, 2, 3)
    ]


@pytest.mark.parametrize("mode", ["debug", "tasks", "checkpoints"])
async def test_debug_tasks_checkpoints_modes(stack: Stack, mode: str) -> None:
    body = await run_agent(stack, [mode])
    assert body
    assert {e.event for e in body} == {mode}
    if mode == "checkpoints":
        assert {"config", "metadata", "values", "next"} <= set(body[-1].data)
        assert body[-1].data["config"]["configurable"]["thread_id"] == "t1"
    if mode == "tasks":
        assert {e.data["name"] for e in body} == {"agent", "tools"}
    if mode == "debug":
        assert {e.data["type"] for e in body} == {"checkpoint", "task", "task_result"}


async def test_events_mode_with_values(stack: Stack) -> None:
    body = await run_agent(stack, ["events", "values"])
    kinds = {e.data["event"] for e in body if e.event == "events"}
    assert {"on_chain_start", "on_chat_model_stream", "on_chain_end"} <= kinds
    values = [e for e in body if e.event == "values"]
    assert values
    assert values[-1].data["messages"][-1]["type"] == "ai"


async def test_events_mode_alone(stack: Stack) -> None:
    body = await run_agent(stack, ["events"])
    assert {e.event for e in body} == {"events"}
    assert body[0].data["event"] == "on_chain_start"
    assert body[-1].data["event"] == "on_chain_end"


async def test_several_modes_share_one_execution(stack: Stack) -> None:
    body = await run_agent(stack, ["values", "updates", "custom", "messages-tuple"])
    assert {e.event for e in body} == {"values", "updates", "custom", "messages"}
    assert stack.gate.calls == 0


async def test_subgraph_events_are_namespaced(stack: Stack) -> None:
    record = await stack.start(
        "t1", "nested", input={"log": []}, stream_mode=["updates", "values"],
        stream_subgraphs=True,
    )
    events = await stack.events(record.run_id)
    check_frame(events, record.run_id, "t1", "success")
    names = [e.event for e in events[1:-1]]
    inner = [n for n in names if "|" in n]
    assert inner
    assert all(n.split("|")[1].startswith("child:") for n in inner)
    assert {n.split("|")[0] for n in inner} == {"updates", "values"}
    assert "updates" in names
    assert "values" in names
    inner_update = next(e for e in events if e.event.startswith("updates|"))
    assert inner_update.data == {"inner_node": {"log": ["inner"]}}


async def test_without_stream_subgraphs_there_is_no_namespace(stack: Stack) -> None:
    record = await stack.start("t1", "nested", input={"log": []}, stream_mode=["updates"])
    events = await stack.events(record.run_id)
    assert all("|" not in e.event for e in events)


def test_unknown_stream_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="tools"):
        plan_stream(["values", "tools"])
    assert plan_stream(["messages", "messages-tuple"]).graph_modes == ("messages",)
