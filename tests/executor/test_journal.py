"""RunJournal as a callback handler: what it records, the caller and model it names, its stats.

Graphs run directly (no executor) with the journal in their config and a real
MemoryEventStore behind it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.graph import START, MessagesState, StateGraph

from runlane.examples.agent import MODEL_NAME
from runlane.examples.agent import graph as agent_graph
from runlane.executor.finalize import LAST_AI_MESSAGE_LIMIT
from runlane.executor.journal import RunJournal
from runlane.executor.journal_fields import (
    caller_of,
    input_messages,
    model_hint,
    model_name_of,
    usage_of,
)
from runlane.runtime.events.memory import MemoryEventStore

pytestmark = pytest.mark.anyio

TEXT = "one two three"


def journal_for(store: MemoryEventStore, thread_id: str = "t1", run_id: str = "r1") -> RunJournal:
    journal = RunJournal(store, thread_id=thread_id, run_id=run_id, user_id="u1")
    journal.start()
    return journal


async def all_events(store: MemoryEventStore, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    page = await store.list_events(thread_id, run_id, limit=1000)
    assert not page.has_more
    return page.items


# --- pure helpers ------------------------------------------------------------------------


def test_caller_from_checkpoint_namespace_and_tags() -> None:
    root = {"langgraph_checkpoint_ns": "agent:1f2e", "checkpoint_ns": "agent:1f2e"}
    assert caller_of(root, ["seq:step:1"]) == "lead_agent"
    assert caller_of(None, None) == "lead_agent"
    nested = {"langgraph_checkpoint_ns": "child:aa|agent:bb", "checkpoint_ns": "child:aa"}
    assert caller_of(nested, []) == "subgraph:child"
    deep = {"langgraph_checkpoint_ns": "a:1|b:2|agent:3"}
    assert caller_of(deep, []) == "subgraph:a/b"
    assert caller_of({"checkpoint_ns": "child:aa|x:bb"}, []) == "subgraph:child"
    assert caller_of(nested, ["middleware"]) == "middleware"
    assert caller_of(root, ["middleware:summarise"]) == "middleware"
    assert caller_of(root, ["middlewares"]) == "lead_agent"


def test_model_name_and_usage_fallbacks() -> None:
    reply = AIMessage(content="x", response_metadata={"model_name": "m-response"})
    assert model_name_of(reply, {"model_name": "m-output"}, "m-hint") == "m-response"
    assert model_name_of(AIMessage(content="x"), {"model": "m-output"}, "m-hint") == "m-output"
    assert model_name_of(AIMessage(content="x"), None, "m-hint") == "m-hint"
    assert model_name_of(None, None, None) == "unknown"
    assert model_hint({"kwargs": {"model": "m-serialized"}}, {}) == "m-serialized"
    assert model_hint({}, {"invocation_params": {"model_name": "m-params"}}) == "m-params"
    assert model_hint(None, {"invocation_params": {"_type": "fake-chat"}}) == "fake-chat"

    usage = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert usage_of(AIMessage(content="x", usage_metadata=usage), None) == usage
    legacy = {"token_usage": {"prompt_tokens": 2, "completion_tokens": 5}}
    assert usage_of(AIMessage(content="x"), legacy) == {
        "input_tokens": 2,
        "output_tokens": 5,
        "total_tokens": 7,
    }
    assert usage_of(AIMessage(content="x"), {}) is None


def test_input_messages_accepts_the_api_forms() -> None:
    forms: list[Any] = [
        {"messages": [{"role": "user", "content": "a"}, {"type": "ai", "content": "b"}]},
        {"messages": [HumanMessage("a")]},
        {"messages": "a"},
        {"messages": [("user", "a")]},
    ]
    for form in forms:
        first = input_messages(form)[0]
        assert isinstance(first, HumanMessage)
        assert first.text == "a"
    assert input_messages(None) == []
    assert input_messages({"log": []}) == []
    assert input_messages({"messages": [{"nonsense": 1}]}) == []


# --- recording a real graph ----------------------------------------------------------------


async def test_agent_run_is_recorded_in_order_with_usage() -> None:
    store = MemoryEventStore()
    journal = journal_for(store)
    graph_input = {"messages": [{"role": "user", "content": TEXT}]}
    journal.record_input(graph_input)
    await agent_graph.ainvoke(graph_input, {"callbacks": [journal]})
    assert await journal.finish(status="success") is True

    events = await all_events(store, "t1", "r1")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event_type"] for e in events] == [
        "human_input",
        "llm_end",
        "ai_message",
        "tool_end",
        "llm_end",
        "ai_message",
        "run.delivery",
    ]
    answer = 'Your message "one two three" has 3 words.'
    messages = [e for e in events if e["category"] == "message"]
    assert [m["content"] for m in messages] == [TEXT, "Let me count the words.", "3", answer]
    assert {e["user_id"] for e in events} == {"u1"}
    first_ai = messages[1]["metadata"]
    assert first_ai["caller"] == "lead_agent"
    assert first_ai["model"] == MODEL_NAME
    assert first_ai["usage"] == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert first_ai["tool_calls"] == [
        {"name": "count_words", "args": {"text": TEXT}, "id": "call_1"}
    ]
    assert messages[2]["metadata"]["tool"] == "count_words"
    assert messages[2]["metadata"]["tool_call_id"] == "call_1"

    traces = [e["content"] for e in events if e["event_type"] == "llm_end"]
    assert [t["llm_call_index"] for t in traces] == [1, 2]
    assert [t["usage"]["total_tokens"] for t in traces] == [8, 17]
    assert all(t["model"] == MODEL_NAME and t["caller"] == "lead_agent" for t in traces)
    assert all(isinstance(t["latency_ms"], float) and t["latency_ms"] >= 0 for t in traces)

    receipt = events[-1]
    assert receipt["category"] == "lifecycle"
    assert receipt["content"]["status"] == "success"
    assert receipt["content"]["events_written"] == 6

    stats = journal.completion_stats()
    assert stats == {
        "total_input_tokens": 12,
        "total_output_tokens": 13,
        "total_tokens": 25,
        "llm_call_count": 2,
        "lead_agent_tokens": 25,
        "subagent_tokens": 0,
        "middleware_tokens": 0,
        "token_usage_by_model": {
            MODEL_NAME: {
                "input_tokens": 12,
                "output_tokens": 13,
                "total_tokens": 25,
                "llm_calls": 2,
            }
        },
        "message_count": 4,
        "first_human_message": TEXT,
        "last_ai_message": answer,
    }


async def test_a_subgraph_model_call_names_its_subgraph() -> None:
    outer = StateGraph(MessagesState)
    outer.add_node("child", agent_graph)
    outer.add_edge(START, "child")
    store = MemoryEventStore()
    journal = journal_for(store)
    await outer.compile().ainvoke({"messages": [HumanMessage(TEXT)]}, {"callbacks": [journal]})
    await journal.finish(status="success")
    events = await all_events(store, "t1", "r1")
    callers = {e["content"]["caller"] for e in events if e["event_type"] == "llm_end"}
    assert callers == {"subgraph:child"}
    stats = journal.completion_stats()
    assert (stats["subagent_tokens"], stats["lead_agent_tokens"]) == (25, 0)


async def test_a_middleware_call_is_a_trace_row_only() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="summary")]))

    async def summarise(state: MessagesState) -> dict[str, Any]:
        await model.ainvoke(state["messages"], config={"tags": ["middleware:summarise"]})
        return {}

    builder = StateGraph(MessagesState)
    builder.add_node("summarise", summarise)
    builder.add_edge(START, "summarise")
    store = MemoryEventStore()
    journal = journal_for(store)
    await builder.compile().ainvoke({"messages": [HumanMessage("x")]}, {"callbacks": [journal]})
    await journal.finish(status="success")
    events = await all_events(store, "t1", "r1")
    assert [e["event_type"] for e in events] == ["llm_end", "run.delivery"]
    assert events[0]["content"]["caller"] == "middleware"
    assert events[0]["content"]["model"] == "generic-fake-chat-model"
    assert journal.completion_stats()["llm_call_count"] == 1
    assert journal.completion_stats()["message_count"] == 0


async def test_a_sync_model_call_in_a_sync_node_is_recorded() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="from a thread")]))

    def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    store = MemoryEventStore()
    journal = journal_for(store)
    await builder.compile().ainvoke({"messages": [HumanMessage("x")]}, {"callbacks": [journal]})
    await journal.finish(status="success")
    page = await store.list_messages_by_run("t1", "r1")
    assert [m["content"] for m in page.items] == ["from a thread"]


async def test_last_ai_message_is_truncated_and_errors_are_recorded() -> None:
    store = MemoryEventStore()
    journal = journal_for(store)
    long = "x" * (LAST_AI_MESSAGE_LIMIT + 500)
    run = uuid.uuid4()
    await journal.on_chat_model_start({}, [[HumanMessage("x")]], run_id=run, metadata={})
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage(content=long))]])
    await journal.on_llm_end(result, run_id=run)
    journal.record_error(ValueError("boom"))
    await journal.finish(status="error", error="boom")
    await journal.finish(status="error", error="boom")  # the receipt stays single

    stats = journal.completion_stats()
    assert stats["last_ai_message"] == long[:LAST_AI_MESSAGE_LIMIT]
    assert stats["llm_call_count"] == 1
    assert stats["total_tokens"] == 0
    assert stats["token_usage_by_model"] == {
        "unknown": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "llm_calls": 1}
    }
    events = await all_events(store, "t1", "r1")
    assert [e["event_type"] for e in events] == [
        "llm_end",
        "ai_message",
        "run_error",
        "run.delivery",
    ]
    assert events[1]["content"] == long  # the event keeps the whole text
    assert events[2]["content"] == {"error": "ValueError", "message": "boom"}
    assert events[3]["content"]["status"] == "error"
    assert events[3]["content"]["error"] == "boom"


async def test_non_json_values_are_stored_as_text() -> None:
    store = MemoryEventStore()
    journal = journal_for(store)
    await journal.on_tool_end(object(), run_id=uuid.uuid4(), name="weird")
    await journal.on_tool_error(KeyError("k"), run_id=uuid.uuid4(), name="weird")
    assert await journal.finish(status="success") is True
    events = await all_events(store, "t1", "r1")
    assert events[0]["event_type"] == "tool_end"
    assert events[0]["content"].startswith("<object object")
    assert events[1]["content"] == {"error": "KeyError", "message": "'k'", "tool": "weird"}
