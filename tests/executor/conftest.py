"""A real executor stack per test: RunManager(MemoryRunStore), MemoryStreamBridge,
MemoryThreadStore and the SQLite checkpointer in ``tmp_path``; plus small graphs
whose nodes the tests control through asyncio events (no sleeps)."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from runlane.examples.agent import graph as agent_graph
from runlane.examples.agent import hitl_graph
from runlane.executor import RunExecutor, RunRequest, open_checkpointer
from runlane.graphs.registry import GraphRegistry
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import RunRecord
from runlane.runtime.runs.store.memory import MemoryRunStore
from runlane.runtime.stream_bridge.base import StreamEvent
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge
from runlane.runtime.threads import MemoryThreadStore

SQLITE_URL = "sqlite+aiosqlite:///unused.db"


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


@dataclass
class Gate:
    """A node that announces it started and waits to be released."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0


def build_test_graphs(gate: Gate) -> dict[str, Any]:
    """Graphs the tests drive; ``gate`` controls the blocking ones."""

    def first(state: LogState) -> dict[str, Any]:
        return {"log": ["first"]}

    async def blocked(state: LogState) -> dict[str, Any]:
        gate.calls += 1
        gate.started.set()
        await gate.release.wait()
        return {"log": ["blocked"]}

    slow = StateGraph(LogState)
    slow.add_node("first", first)
    slow.add_node("blocked", blocked)
    slow.add_edge(START, "first")
    slow.add_edge("first", "blocked")
    slow.add_edge("blocked", END)

    def ask(state: LogState) -> dict[str, Any]:
        answer = interrupt("answer?")
        return {"log": [f"answer:{answer}"]}

    ask_then_block = StateGraph(LogState)
    ask_then_block.add_node("ask", ask)
    ask_then_block.add_node("blocked", blocked)
    ask_then_block.add_edge(START, "ask")
    ask_then_block.add_edge("ask", "blocked")
    ask_then_block.add_edge("blocked", END)

    def echo(state: LogState, config: RunnableConfig) -> dict[str, Any]:
        conf = config["configurable"]
        return {"log": [f"{conf['thread_id']}|{conf.get('checkpoint_ns', '')}|{conf['run_id']}"]}

    echo_graph = StateGraph(LogState)
    echo_graph.add_node("echo", echo)
    echo_graph.add_edge(START, "echo")

    def boom(state: LogState) -> dict[str, Any]:
        raise ValueError("boom")

    failing = StateGraph(LogState)
    failing.add_node("first", first)
    failing.add_node("boom", boom)
    failing.add_edge(START, "first")
    failing.add_edge("first", "boom")

    def inner_node(state: LogState) -> dict[str, Any]:
        return {"log": ["inner"]}

    inner = StateGraph(LogState)
    inner.add_node("inner_node", inner_node)
    inner.add_edge(START, "inner_node")
    parent = StateGraph(LogState)
    parent.add_node("child", inner.compile())
    parent.add_node("first", first)
    parent.add_edge(START, "first")
    parent.add_edge("first", "child")

    return {
        "agent": agent_graph,
        "hitl": hitl_graph,
        "slow": slow,
        "ask_then_block": ask_then_block,
        "echo": echo_graph,
        "failing": failing,
        "nested": parent,
    }


@dataclass
class Stack:
    executor: RunExecutor
    manager: RunManager
    store: MemoryRunStore
    bridge: MemoryStreamBridge
    threads: MemoryThreadStore
    checkpointer: BaseCheckpointSaver[Any]
    gate: Gate

    async def start(
        self, thread_id: str, graph_id: str, *, strategy: str = "enqueue", **request: Any
    ) -> RunRecord:
        await self.threads.create(thread_id, if_exists="do_nothing")
        req = RunRequest(graph_id=graph_id, assistant_id=graph_id, **request)
        record = await self.manager.create_or_reject(
            thread_id, graph_id, kwargs=req.to_kwargs(), multitask_strategy=strategy
        )
        await self.executor.submit(record)
        return record

    async def events(self, run_id: str) -> list[StreamEvent]:
        """Every entry of the run's stream, from the first to the terminal one."""
        out: list[StreamEvent] = []
        with anyio.fail_after(20):
            async for item in self.bridge.subscribe(run_id, last_event_id="0"):
                assert isinstance(item, StreamEvent)
                assert item.id, f"unexpected sentinel {item.event}"
                out.append(item)
                if item.terminal:
                    break
        return out

    async def thread_status(self, thread_id: str) -> str | None:
        row = await self.threads.get(thread_id)
        return None if row is None else row["status"]


async def make_stack(checkpointer: BaseCheckpointSaver[Any]) -> tuple[Stack, MemoryStreamBridge]:
    gate = Gate()
    store = MemoryRunStore()
    manager = RunManager(store)
    bridge = MemoryStreamBridge()
    threads = MemoryThreadStore()
    registry = GraphRegistry.from_objects(build_test_graphs(gate))
    executor = RunExecutor(
        manager=manager, bridge=bridge, registry=registry,
        checkpointer=checkpointer, threads=threads,
    )
    return Stack(executor, manager, store, bridge, threads, checkpointer, gate), bridge


async def close_stack(stack: Stack) -> None:
    stack.gate.release.set()
    await stack.manager.close()
    await stack.bridge.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_checkpointer(SQLITE_URL, tmp_path) as checkpointer:
        built, _ = await make_stack(checkpointer)
        try:
            yield built
        finally:
            await close_stack(built)
