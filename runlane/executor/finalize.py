"""The finalisation pipeline every run goes through, in a fixed order.

0. :func:`flush_journal`: the run journal (when the run has one) is flushed
   to the event log within its deadline, its delivery receipt written, and
   its counters become the completion statistics.
1. :func:`compare_and_set_status`: the run's terminal status, as a
   compare-and-set through the manager (a cancel that won stays).
2. :func:`record_completion`: completion statistics on the run row.
3. :func:`update_thread_status`: ``busy`` while another run of the thread is
   pending or running; else ``error`` if this run failed; else
   ``interrupted`` if the thread's latest checkpoint waits (``next`` or
   interrupts); else ``idle``.
4. :func:`publish_terminal_entry`: the stream's terminal entry
   ``{"run_id", "status", "error"}``; success -> ENDED, interrupted ->
   CANCELLED, error/timeout -> ERRORED.

Guarantee: :func:`run_finalization` runs every step even when an earlier one
raises (the failure is logged and named in ``ctx.failed_steps``), so the
terminal entry is always the last thing a run publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult

from runlane.exceptions import RunNotFoundError
from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import TERMINAL_STATUSES, RunStatus
from runlane.runtime.stream_bridge.base import StreamBridge, StreamStatus
from runlane.runtime.threads.base import ThreadStatus, ThreadStore

if TYPE_CHECKING:
    from runlane.executor.journal import RunJournal

__all__ = [
    "LAST_AI_MESSAGE_LIMIT",
    "PIPELINE",
    "FinalizeContext",
    "Step",
    "UsageCounter",
    "compare_and_set_status",
    "flush_journal",
    "message_stats",
    "publish_terminal_entry",
    "record_completion",
    "run_finalization",
    "stream_status_for",
    "thread_status_for",
    "update_thread_status",
]

logger = logging.getLogger(__name__)

LAST_AI_MESSAGE_LIMIT = 2000
"""Characters of the last AI message kept in the run's completion stats."""


class UsageCounter(BaseCallbackHandler):
    """Counts one run's LLM calls and the tokens their messages report.

    Runs inline and ignores every callback but ``on_llm_end``, so it costs
    nothing on chain steps. Tokens come from ``usage_metadata``; a call
    reporting none still counts as a call.
    """

    run_inline = True
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self) -> None:
        self.llm_call_count = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.total_tokens = 0

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.llm_call_count += 1
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if not usage:
                    continue
                inp, out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
                self.input_tokens += inp
                self.output_tokens += out
                self.total_tokens += usage.get("total_tokens") or inp + out

    def stats(self) -> dict[str, Any]:
        return {
            "llm_call_count": self.llm_call_count,
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


def message_stats(values: Any) -> dict[str, Any]:
    """``message_count``, ``first_human_message``, ``last_ai_message`` of a state's messages."""
    messages = values.get("messages") if isinstance(values, dict) else None
    if not isinstance(messages, list):
        return {}
    msgs = [m for m in messages if isinstance(m, BaseMessage)]
    first_human = next((m.text for m in msgs if isinstance(m, HumanMessage)), None)
    last_ai = next((m.text for m in reversed(msgs) if isinstance(m, AIMessage) and m.text), None)
    return {
        "message_count": len(msgs),
        "first_human_message": first_human,
        "last_ai_message": last_ai[:LAST_AI_MESSAGE_LIMIT] if last_ai else None,
    }


def stream_status_for(status: RunStatus | str) -> StreamStatus:
    """The terminal stream kind for a final run status."""
    status = RunStatus(status)
    if status == RunStatus.success:
        return StreamStatus.ENDED
    if status == RunStatus.interrupted:
        return StreamStatus.CANCELLED
    return StreamStatus.ERRORED


def thread_status_for(*, active: bool, failed: bool, waiting: bool) -> ThreadStatus:
    """The thread status rule of step 3 as a pure function."""
    if active:
        return "busy"
    if failed:
        return "error"
    return "interrupted" if waiting else "idle"


@dataclass
class FinalizeContext:
    """Everything the pipeline needs, and what its steps decided.

    ``status``/``error`` are the outcome the run proposes; step 1 replaces
    them with what the store holds. ``stats`` None skips step 2 (a run that
    never started). ``waiting`` says whether the thread's latest checkpoint
    has ``next`` nodes or interrupts. ``journal`` is the run's event-log
    producer, if it has one (step 0).
    """

    run_id: str
    thread_id: str
    status: RunStatus
    manager: RunManager
    bridge: StreamBridge
    threads: ThreadStore
    waiting: Callable[[], Awaitable[bool]]
    error: str | None = None
    stats: dict[str, Any] | None = None
    journal: RunJournal | None = None
    thread_status: ThreadStatus | None = None
    terminal_id: str | None = None
    failed_steps: list[str] = field(default_factory=list)


Step = Callable[[FinalizeContext], Awaitable[None]]


async def flush_journal(ctx: FinalizeContext) -> None:
    """Step 0: flush the run journal, write its receipt; its counters become ``ctx.stats``."""
    if ctx.journal is None:
        return
    try:
        await ctx.journal.finish(status=ctx.status.value, error=ctx.error)
    finally:
        if ctx.stats is not None:
            ctx.stats.update(ctx.journal.completion_stats())


async def compare_and_set_status(ctx: FinalizeContext) -> None:
    """Step 1: write the terminal status unless another one is already stored."""
    try:
        await ctx.manager.set_status(ctx.run_id, ctx.status, error=ctx.error)
    except RunNotFoundError:
        return
    record = await ctx.manager.get(ctx.run_id)
    if record is not None and record.status in TERMINAL_STATUSES and record.status != ctx.status:
        ctx.status = record.status
        ctx.error = record.error


async def record_completion(ctx: FinalizeContext) -> None:
    """Step 2: completion statistics (skipped when ``ctx.stats`` is None)."""
    if ctx.stats is None:
        return
    extra = {"error": ctx.error} if ctx.error is not None else {}
    await ctx.manager.update_run_completion(ctx.run_id, status=ctx.status, **ctx.stats, **extra)


async def update_thread_status(ctx: FinalizeContext) -> None:
    """Step 3: the thread status, through :meth:`ThreadStore.settle_status`: ``busy``
    while another run of the thread is active (also one admitted meanwhile),
    else the rule of :func:`thread_status_for`. On SQL stores that is one
    ``UPDATE`` deciding from the runs table; the memory store asks the manager."""
    failed = ctx.status in (RunStatus.error, RunStatus.timeout)
    waiting = False if failed else await ctx.waiting()
    status = thread_status_for(active=False, failed=failed, waiting=waiting)

    def has_active_run() -> Awaitable[bool]:
        return ctx.manager.has_inflight(ctx.thread_id)

    stored = await ctx.threads.settle_status(ctx.thread_id, status, has_active_run=has_active_run)
    ctx.thread_status = stored or status


async def publish_terminal_entry(ctx: FinalizeContext) -> None:
    """Step 4: the terminal stream entry, always the run's last event."""
    ctx.terminal_id = await ctx.bridge.publish_terminal(
        ctx.run_id,
        stream_status_for(ctx.status),
        {"run_id": ctx.run_id, "status": ctx.status.value, "error": ctx.error},
    )


PIPELINE: tuple[Step, ...] = (
    flush_journal,
    compare_and_set_status,
    record_completion,
    update_thread_status,
    publish_terminal_entry,
)


async def run_finalization(
    ctx: FinalizeContext, steps: Sequence[Step] = PIPELINE
) -> FinalizeContext:
    """Run ``steps`` in order; a step that raises is logged and the next one runs."""
    for step in steps:
        try:
            await step(ctx)
        except Exception:
            logger.exception("run %s: finalisation step %s failed", ctx.run_id, step.__name__)
            ctx.failed_steps.append(step.__name__)
    return ctx
