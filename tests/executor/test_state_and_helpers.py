"""Serialisation, requests, the checkpointer factory and the thread-state helpers."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from pathlib import Path

import orjson
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.types import Command, Interrupt, Send
from pydantic import BaseModel

from runlane.executor import RunRequest, open_checkpointer
from runlane.executor.checkpointer import postgres_conninfo
from runlane.executor.request import build_input
from runlane.executor.serialize import encode, fragment, to_jsonable
from runlane.executor.state import copy_thread, get_history, update_state
from runlane.executor.streaming import OutputCollector
from tests.executor.conftest import Stack

pytestmark = pytest.mark.anyio


class Model(BaseModel):
    a: int


@dataclasses.dataclass
class Point:
    x: int


def test_encode_converts_langchain_and_langgraph_objects() -> None:
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=1)
    data = to_jsonable({
        "m": HumanMessage("hi", id="m1"),
        "chunk": AIMessageChunk(content="a"),
        "i": (Interrupt(value={"q": 1}, id="i1"),),
        "send": Send("node", {"k": 1}),
        "cmd": Command(resume="yes"),
        "set": {1},
        "model": Model(a=1),
        "point": Point(2),
        "when": when,
        "id": ident,
        "bytes": b"\x00",
        "exc": ValueError("bad"),
        3: "non-str key",
        "odd": object,
    })
    assert data["m"]["type"] == "human"
    assert data["m"]["content"] == "hi"
    assert data["m"]["id"] == "m1"
    assert data["chunk"]["type"] == "AIMessageChunk"
    assert data["i"] == [{"id": "i1", "value": {"q": 1}}]
    assert data["send"] == {"node": "node", "arg": {"k": 1}}
    assert data["cmd"]["resume"] == "yes"
    assert (data["set"], data["model"], data["point"]) == ([1], {"a": 1}, {"x": 2})
    assert data["when"] == "2026-01-02T00:00:00+00:00"
    assert data["id"] == str(ident)
    assert data["bytes"] == "AA=="
    assert data["exc"] == {"error": "ValueError", "message": "bad"}
    assert data["3"] == "non-str key"
    assert data["odd"] == str(object)
    assert orjson.dumps({"x": fragment([1, "a"])}) == b'{"x":' + encode([1, "a"]) + b"}"


def test_run_request_round_trip_and_input() -> None:
    request = RunRequest(graph_id="g", assistant_id="a", input={"x": 1}, stream_mode=["values"])
    assert RunRequest.from_kwargs(orjson.loads(orjson.dumps(request.to_kwargs()))) == request
    assert RunRequest.from_kwargs({"graph_id": "g", "assistant_id": "a", "stream_mode": "updates"}
                                  ).stream_mode == ["updates"]
    with pytest.raises(TypeError, match="webhook"):
        RunRequest.from_kwargs({"graph_id": "g", "assistant_id": "a", "webhook": "u"})
    assert build_input(request) == {"x": 1}
    command = build_input(RunRequest(
        graph_id="g", assistant_id="a",
        command={"resume": 1, "update": [["k", 2]], "goto": {"node": "n", "input": {"v": 3}}},
    ))
    assert command == Command(resume=1, update=[("k", 2)], goto=Send("n", {"v": 3}))


def test_output_collector_merges_interrupt_chunks() -> None:
    collector = OutputCollector()
    assert collector.result() is None
    collector.add("values", {"a": 1})
    collector.add("values", {"__interrupt__": [{"id": "1", "value": "x"}]})
    collector.add("values", {"__interrupt__": [{"id": "2", "value": "y"}]})
    collector.add("updates", {"ignored": True})
    assert collector.result() == {
        "a": 1, "__interrupt__": [{"id": "1", "value": "x"}, {"id": "2", "value": "y"}]
    }
    collector.add("error", {"error": "E", "message": "m"})
    assert collector.result() == {"__error__": {"error": "E", "message": "m"}}


def test_postgres_conninfo_from_sqlalchemy_urls() -> None:
    assert postgres_conninfo("postgresql+asyncpg://u:p@h:5433/db?ssl=require") == (
        "postgresql://u:p@h:5433/db?sslmode=require"
    )
    assert postgres_conninfo("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_open_checkpointer_refuses_unknown_schemes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mysql"):
        async with open_checkpointer("mysql://x/y", tmp_path):
            pass


async def test_history_update_state_and_copy_thread(stack: Stack) -> None:
    record = await stack.start("t1", "hitl", input={"messages": [{"role": "user", "content": "x"}]})
    await stack.events(record.run_id)
    async with stack.executor.graph_for_thread("t1") as graph:
        history = await get_history(graph, "t1", limit=10)
        assert [h["next"] for h in history][:2] == [["review"], ["propose"]]
        assert history[0]["parent_checkpoint"] == history[1]["checkpoint"]
        assert history[0]["tasks"][0]["name"] == "review"
        assert history[0]["tasks"][0]["interrupts"][0]["value"]["question"]
        older = await get_history(graph, "t1", before=history[0]["checkpoint"]["checkpoint_id"])
        assert older == history[1:]
        assert await get_history(graph, "t1", metadata={"step": 1}) == [history[0]]
        written = await update_state(graph, "t1", {"approved": True}, as_node="review")
        assert written["checkpoint"]["thread_id"] == "t1"
    # a checkpoint without graph_id: the thread still finds its graph
    state = await stack.executor.thread_state("t1")
    assert state["values"]["approved"] is True
    assert state["next"] == []
    assert state["checkpoint"] == written["checkpoint"]
    written = await stack.executor.update_state("t1", {"approved": False}, as_node="review")
    state = await stack.executor.thread_state("t1")
    assert state["values"]["approved"] is False
    assert state["checkpoint"] == written["checkpoint"]
    assert state["metadata"]["graph_id"] == "hitl"
    assert await stack.thread_status("t1") == "idle"

    await copy_thread(stack.checkpointer, "t1", "t2")
    copied = await stack.executor.thread_state("t2")
    assert copied["values"] == state["values"]
    assert copied["checkpoint"]["thread_id"] == "t2"
    async with stack.executor.graph_for_thread("t2") as graph:
        assert len(await get_history(graph, "t2", limit=100)) == len(
            await get_history(graph, "t1", limit=100)
        )


async def test_state_of_an_unknown_thread_is_empty(stack: Stack) -> None:
    state = await stack.executor.thread_state("nobody")
    assert state["values"] == {}
    assert state["next"] == []
    assert state["checkpoint"] is None
