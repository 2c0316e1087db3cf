"""The finalisation pipeline: each step, the order, and isolation of failures."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from runlane.executor.finalize import (
    LAST_AI_MESSAGE_LIMIT,
    PIPELINE,
    FinalizeContext,
    UsageCounter,
    compare_and_set_status,
    message_stats,
    publish_terminal_entry,
    record_completion,
    run_finalization,
    stream_status_for,
    thread_status_for,
    update_thread_status,
)
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import RunStatus
from runlane.runtime.runs.store.memory import MemoryRunStore
from runlane.runtime.stream_bridge.base import StreamStatus
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge
from runlane.runtime.threads import MemoryThreadStore

pytestmark = pytest.mark.anyio


class Services:
    def __init__(self) -> None:
        self.store = MemoryRunStore()
        self.manager = RunManager(self.store)
        self.bridge = MemoryStreamBridge()
        self.threads = MemoryThreadStore()
        self.waiting = False

    async def ctx(self, status: RunStatus = RunStatus.success, **kw: Any) -> FinalizeContext:
        await self.threads.create("t1", if_exists="do_nothing")
        record = await self.manager.create_or_reject("t1", "a", multitask_strategy="enqueue")

        async def waiting() -> bool:
            return self.waiting

        return FinalizeContext(
            run_id=record.run_id, thread_id="t1", status=status, manager=self.manager,
            bridge=self.bridge, threads=self.threads, waiting=waiting, **kw,
        )


@pytest.fixture
async def svc() -> AsyncIterator[Services]:
    services = Services()
    yield services
    await services.manager.close()
    await services.bridge.close()


def test_the_pipeline_order() -> None:
    assert [step.__name__ for step in PIPELINE] == [
        "flush_journal", "compare_and_set_status", "record_completion", "update_thread_status",
        "publish_terminal_entry",
    ]


async def test_compare_and_set_writes_the_status(svc: Services) -> None:
    ctx = await svc.ctx(RunStatus.error, error="bad")
    await compare_and_set_status(ctx)
    row = await svc.store.get(ctx.run_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("error", "bad")


async def test_compare_and_set_keeps_a_cancel_that_won(svc: Services) -> None:
    ctx = await svc.ctx(RunStatus.success)
    assert await svc.manager.cancel(ctx.run_id)
    await compare_and_set_status(ctx)
    assert ctx.status == RunStatus.interrupted
    assert (await svc.store.get(ctx.run_id) or {})["status"] == "interrupted"


async def test_record_completion_stores_the_stats(svc: Services) -> None:
    ctx = await svc.ctx(stats={"message_count": 3, "llm_call_count": 2, "total_tokens": 7})
    await compare_and_set_status(ctx)
    await record_completion(ctx)
    row = await svc.store.get(ctx.run_id)
    assert row is not None
    assert (row["message_count"], row["llm_call_count"], row["total_tokens"]) == (3, 2, 7)


async def test_record_completion_is_skipped_without_stats(svc: Services) -> None:
    ctx = await svc.ctx(stats=None)
    await record_completion(ctx)
    assert (await svc.store.get(ctx.run_id) or {})["message_count"] in (0, None)


@pytest.mark.parametrize(
    ("active", "failed", "waiting", "expected"),
    [
        (True, True, True, "busy"),
        (False, True, True, "error"),
        (False, False, True, "interrupted"),
        (False, False, False, "idle"),
    ],
)
def test_thread_status_rule(active: bool, failed: bool, waiting: bool, expected: str) -> None:
    assert thread_status_for(active=active, failed=failed, waiting=waiting) == expected


@pytest.mark.parametrize(
    ("status", "waiting", "expected"),
    [
        (RunStatus.success, False, "idle"),
        (RunStatus.success, True, "interrupted"),
        (RunStatus.interrupted, False, "idle"),
        (RunStatus.error, True, "error"),
        (RunStatus.timeout, False, "error"),
    ],
)
async def test_update_thread_status(
    svc: Services, status: RunStatus, waiting: bool, expected: str
) -> None:
    ctx = await svc.ctx(status)
    svc.waiting = waiting
    await compare_and_set_status(ctx)
    await update_thread_status(ctx)
    assert ctx.thread_status == expected
    assert (await svc.threads.get("t1") or {})["status"] == expected


async def test_update_thread_status_is_busy_while_another_run_waits(svc: Services) -> None:
    ctx = await svc.ctx(RunStatus.success)
    await svc.manager.create_or_reject("t1", "a", multitask_strategy="enqueue")
    await compare_and_set_status(ctx)
    await update_thread_status(ctx)
    assert (await svc.threads.get("t1") or {})["status"] == "busy"


@pytest.mark.parametrize(
    ("status", "kind", "name"),
    [
        (RunStatus.success, StreamStatus.ENDED, "end"),
        (RunStatus.interrupted, StreamStatus.CANCELLED, "cancel"),
        (RunStatus.error, StreamStatus.ERRORED, "error"),
        (RunStatus.timeout, StreamStatus.ERRORED, "error"),
    ],
)
async def test_publish_terminal_entry(
    svc: Services, status: RunStatus, kind: StreamStatus, name: str
) -> None:
    assert stream_status_for(status) == kind
    ctx = await svc.ctx(status, error="why")
    await publish_terminal_entry(ctx)
    assert await svc.bridge.get_status(ctx.run_id) == kind
    events = [e async for e in svc.bridge.subscribe(ctx.run_id, last_event_id="0")]
    assert [(e.event, e.data) for e in events] == [
        (name, {"run_id": ctx.run_id, "status": status.value, "error": "why"})
    ]


async def test_steps_run_in_order_before_the_terminal_entry(svc: Services) -> None:
    seen: dict[str, Any] = {}

    class Watching(MemoryStreamBridge):
        async def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any = None) -> str:
            row = await svc.store.get(run_id) or {}
            seen.update(status=row.get("status"), count=row.get("message_count"),
                        thread=(await svc.threads.get("t1") or {}).get("status"))
            return await super().publish_terminal(run_id, kind, data)

    svc.bridge = Watching()
    ctx = await svc.ctx(RunStatus.success, stats={"message_count": 5})
    await run_finalization(ctx)
    assert seen == {"status": "success", "count": 5, "thread": "idle"}
    assert ctx.failed_steps == []


async def test_a_failing_step_does_not_skip_the_terminal_entry(svc: Services) -> None:
    class BrokenThreads(MemoryThreadStore):
        async def set_status(self, thread_id: str, status: Any) -> bool:
            raise RuntimeError("thread store down")

    svc.threads = BrokenThreads()
    ctx = await svc.ctx(RunStatus.success, stats={"not_a_stat": 1})
    await run_finalization(ctx)
    assert ctx.failed_steps == ["record_completion", "update_thread_status"]
    assert await svc.bridge.get_status(ctx.run_id) == StreamStatus.ENDED
    assert (await svc.store.get(ctx.run_id) or {})["status"] == "success"


def test_usage_counter_and_message_stats() -> None:
    counter = UsageCounter()
    reply = AIMessage(
        content="hi", usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    )
    counter.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=reply)]]), run_id=uuid.uuid4()
    )
    counter.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage(content="x"))]]),
        run_id=uuid.uuid4(),
    )
    assert counter.stats() == {
        "llm_call_count": 2, "total_input_tokens": 3, "total_output_tokens": 4, "total_tokens": 7,
    }
    long = "y" * (LAST_AI_MESSAGE_LIMIT + 10)
    values = {"messages": [HumanMessage("q"), AIMessage(long), ToolMessage("1", tool_call_id="c")]}
    assert message_stats(values) == {
        "message_count": 3, "first_human_message": "q",
        "last_ai_message": "y" * LAST_AI_MESSAGE_LIMIT,
    }
    assert message_stats({"other": 1}) == {}
