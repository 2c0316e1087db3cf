"""The journal inside the executor: every run recorded, stats on the run row, and a slow
event store that never slows the stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from runlane.examples.agent import MODEL_NAME
from runlane.executor import RunExecutor, open_checkpointer
from runlane.executor.journal_writer import WriterLimits
from runlane.graphs.registry import GraphRegistry
from runlane.runtime.events.base import EventStore, NewEvent
from runlane.runtime.events.memory import MemoryEventStore
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import RunRecord
from runlane.runtime.runs.store.memory import MemoryRunStore
from runlane.runtime.stream_bridge.base import StreamEvent
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge
from runlane.runtime.threads import MemoryThreadStore
from tests.executor.conftest import SQLITE_URL, Gate, Stack, build_test_graphs, close_stack

pytestmark = pytest.mark.anyio

TEXT = "one two three"
ANSWER = 'Your message "one two three" has 3 words.'
HUMAN = {"messages": [{"role": "user", "content": TEXT}]}


class GatedStore(MemoryEventStore):
    """A store whose batches wait until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        self.entered.set()
        await self.gate.wait()
        return await super().put_batch(events)


@contextlib.asynccontextmanager
async def open_stack(tmp_path: Path, events: EventStore) -> AsyncIterator[Stack]:
    async with open_checkpointer(SQLITE_URL, tmp_path) as checkpointer:
        gate = Gate()
        store = MemoryRunStore()
        manager = RunManager(store)
        bridge = MemoryStreamBridge()
        threads = MemoryThreadStore()
        executor = RunExecutor(
            manager=manager,
            bridge=bridge,
            registry=GraphRegistry.from_objects(build_test_graphs(gate)),
            checkpointer=checkpointer,
            threads=threads,
            events=events,
            journal_limits=WriterLimits(retry_initial=0, retry_max=0, flush_timeout=30),
        )
        stack = Stack(executor, manager, store, bridge, threads, checkpointer, gate)
        try:
            yield stack
        finally:
            await close_stack(stack)


@pytest.fixture
def events() -> MemoryEventStore:
    return MemoryEventStore()


@pytest.fixture
async def stack(tmp_path: Path, events: MemoryEventStore) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path, events) as built:
        yield built


async def test_an_agent_run_is_journalled_and_its_stats_reach_the_run_row(
    stack: Stack, events: MemoryEventStore
) -> None:
    record = await stack.start("t1", "agent", input=HUMAN)
    entries = await stack.events(record.run_id)
    assert entries[-1].data["status"] == "success"

    page = await events.list_messages_by_run("t1", record.run_id)
    assert [(m["event_type"], m["content"]) for m in page.items] == [
        ("human_input", TEXT),
        ("ai_message", "Let me count the words."),
        ("tool_end", "3"),
        ("ai_message", ANSWER),
    ]
    receipt = await events.list_events("t1", record.run_id, event_types=["run.delivery"])
    assert [e["content"]["status"] for e in receipt.items] == ["success"]

    row = await stack.store.get(record.run_id)
    assert row is not None
    assert (row["total_input_tokens"], row["total_output_tokens"], row["total_tokens"]) == (
        12,
        13,
        25,
    )
    assert row["llm_call_count"] == 2
    assert row["lead_agent_tokens"] == 25
    assert row["token_usage_by_model"] == {
        MODEL_NAME: {"input_tokens": 12, "output_tokens": 13, "total_tokens": 25, "llm_calls": 2}
    }
    assert (row["message_count"], row["first_human_message"], row["last_ai_message"]) == (
        4,
        TEXT,
        ANSWER,
    )
    live = await stack.manager.get(record.run_id)
    assert live is not None
    assert live.total_tokens == 25


async def test_a_failing_run_records_its_error_and_receipt(
    stack: Stack, events: MemoryEventStore
) -> None:
    record = await stack.start("t1", "failing", input={"log": []})
    entries = await stack.events(record.run_id)
    assert entries[-1].data["status"] == "error"
    page = await events.list_events("t1", record.run_id)
    assert [(e["event_type"], e["category"]) for e in page.items] == [
        ("run_error", "lifecycle"),
        ("run.delivery", "lifecycle"),
    ]
    assert page.items[0]["content"] == {"error": "ValueError", "message": "boom"}
    assert page.items[1]["content"]["error"] == "boom"


async def test_a_resume_records_no_human_input(stack: Stack, events: MemoryEventStore) -> None:
    first = await stack.start("t1", "hitl", input={"messages": [{"role": "user", "content": "x"}]})
    await stack.events(first.run_id)
    second = await stack.start("t1", "hitl", command={"resume": "yes"})
    await stack.events(second.run_id)
    page = await events.list_messages("t1")
    assert [m["event_type"] for m in page.items] == ["human_input"]
    row = await stack.store.get(second.run_id)
    assert row is not None
    assert (row["message_count"], row["first_human_message"]) == (0, None)


async def test_a_blocked_store_never_slows_the_stream(tmp_path: Path) -> None:
    store = GatedStore()
    async with open_stack(tmp_path, store) as stack:
        record = await stack.start("t1", "agent", input=HUMAN, stream_mode=["values"])
        seen: list[StreamEvent] = []
        with anyio.fail_after(20):
            stream = stack.bridge.subscribe(record.run_id, last_event_id="0")
            async for item in stream:
                assert isinstance(item, StreamEvent)
                seen.append(item)
                values = item.data if item.event == "values" else {}
                if [m["content"] for m in values.get("messages", [])][-1:] == [ANSWER]:
                    break
            # The graph streamed to its final state while no batch could be written.
            await store.entered.wait()
            assert (await store.list_events("t1", record.run_id)).items == []
            assert not any(e.terminal for e in seen)
            store.gate.set()
            async for item in stream:
                assert isinstance(item, StreamEvent)
                seen.append(item)
                if item.terminal:
                    break
        assert seen[-1].data["status"] == "success"
        # Flushed before the terminal entry: everything is stored by now.
        page = await store.list_messages_by_run("t1", record.run_id)
        assert [m["content"] for m in page.items][-1] == ANSWER
        row = await stack.store.get(record.run_id)
        assert row is not None
        assert row["total_tokens"] == 25


async def settle(record: RunRecord) -> None:
    """Wait for the run's work, cleanup after the terminal entry included."""
    assert record.task is not None
    with anyio.fail_after(10):
        await asyncio.wait([record.task])


async def test_a_rolled_back_run_leaves_no_events(stack: Stack, events: MemoryEventStore) -> None:
    kept = await stack.start("t1", "agent", input=HUMAN)
    await stack.events(kept.run_id)
    record = await stack.start("t1", "slow", input={"log": []})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    assert await stack.manager.cancel(record.run_id, action="rollback")
    entries = await stack.events(record.run_id)
    assert entries[-1].data["status"] == "interrupted"
    await settle(record)
    assert (await events.list_events("t1", record.run_id)).items == []
    assert await events.count_messages("t1", run_id=kept.run_id) == 4


async def test_a_temporary_runs_events_go_with_its_thread(
    stack: Stack, events: MemoryEventStore
) -> None:
    record = await stack.start("tmp", "agent", input=HUMAN, temporary=True)
    await stack.events(record.run_id)
    await settle(record)
    assert await stack.threads.get("tmp") is None
    assert await events.count_messages("tmp") == 0
    assert (await events.list_events("tmp", record.run_id)).items == []
