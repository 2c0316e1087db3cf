"""The run journal: what one run did, recorded in the durable event log.

:class:`RunJournal` is a LangChain async callback handler attached to the
run's config. It records, for one run:

==================  =========  ====================================================
event_type          category   content / metadata
==================  =========  ====================================================
``human_input``     message    the text of each human message of the run's input
``ai_message``      message    the response text; metadata: caller, model, usage,
                               tool_calls, message_id, llm_call_index
``tool_end``        message    the tool result text; metadata: tool, tool_call_id
``llm_end``         trace      {model, caller, usage, latency_ms, llm_call_index}
``llm_error``       trace      {error, message, caller}
``tool_error``      trace      {error, message, tool}
``run_error``       lifecycle  {error, message}
``run.delivery``    lifecycle  the run's receipt (``put_if_absent``, once per run)
==================  =========  ====================================================

``usage`` is ``{input_tokens, output_tokens, total_tokens}``. The caller of a
model call: ``"middleware"`` when the call is tagged ``middleware`` (or
``middleware:<name>``), ``"subgraph:<a/b>"`` when its checkpoint namespace
(``langgraph_checkpoint_ns`` in the callback metadata) is nested, the names
being the parent nodes hosting the subgraph, else ``"lead_agent"``. A
middleware call's response is a trace row only (it is not chat history).

Rows go through an :class:`~runlane.executor.journal_writer.EventWriter`
(buffered, written in batches off the streaming path, retried on failure;
when its buffer is full, trace rows are dropped first and message rows are
never dropped; see that module). The counters behind
:meth:`RunJournal.completion_stats` are kept in memory, so the run row's
statistics are exact even when the store is behind or down.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult

from runlane.executor.finalize import LAST_AI_MESSAGE_LIMIT
from runlane.executor.journal_fields import (
    LEAD_AGENT,
    MIDDLEWARE,
    add_usage,
    caller_of,
    input_messages,
    jsonable,
    model_hint,
    model_name_of,
    text_of,
    usage_of,
    zero_usage,
)
from runlane.executor.journal_writer import EventWriter, WriterLimits
from runlane.runtime.events.base import EventStore, NewEvent

if TYPE_CHECKING:
    from runlane.executor.request import RunRequest
    from runlane.runtime.runs.schemas import RunRecord

__all__ = ["RunJournal"]


class RunJournal(AsyncCallbackHandler):
    """Records one run into the event log; see the module docstring.

    Runs inline, so callbacks arrive in order; every callback only appends
    to the writer's buffer (never awaiting the store), so it costs the run a
    few dict operations per model call or tool result. A synchronous model
    call has its async callbacks run by LangChain on a helper thread; the
    writer accepts rows from any thread.
    """

    run_inline = True
    ignore_chain = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(
        self,
        store: EventStore,
        *,
        thread_id: str,
        run_id: str,
        user_id: str | None = None,
        limits: WriterLimits | None = None,
    ) -> None:
        super().__init__()
        self.thread_id = thread_id
        self.run_id = run_id
        self.user_id = user_id
        self.writer = EventWriter(store, label=run_id, limits=limits)
        self._starts: dict[UUID, tuple[float, str, str | None]] = {}
        self.llm_call_count = 0
        self.usage = zero_usage()
        self.usage_by_model: dict[str, dict[str, int]] = {}
        self.usage_by_caller: dict[str, dict[str, int]] = {}
        self.message_count = 0
        self.first_human_message: str | None = None
        self.last_ai_message: str | None = None
        self.delivered: bool | None = None

    # -- rows -------------------------------------------------------------------------

    def _emit(self, event_type: str, category: str, content: Any, metadata: dict[str, Any]) -> None:
        if category == "message":
            self.message_count += 1
        self.writer.add(
            NewEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                event_type=event_type,
                category=category,
                content=content if isinstance(content, str) else jsonable(content),
                metadata=jsonable(metadata),
                user_id=self.user_id,
            )
        )

    @classmethod
    def for_run(
        cls,
        store: EventStore,
        record: RunRecord,
        request: RunRequest,
        limits: WriterLimits | None = None,
    ) -> RunJournal:
        """A started journal for ``record``, holding the human input of ``request``."""
        journal = cls(
            store,
            thread_id=record.thread_id,
            run_id=record.run_id,
            user_id=record.user_id,
            limits=limits,
        )
        journal.start()
        if request.command is None:
            journal.record_input(request.input)
        return journal

    def start(self) -> None:
        """Start the background writer (call from the run's event loop)."""
        self.writer.start()

    def record_input(self, graph_input: Any) -> None:
        """A ``human_input`` row per human message of the run's input."""
        for message in input_messages(graph_input):
            if not isinstance(message, HumanMessage):
                continue
            text = message.text
            if self.first_human_message is None:
                self.first_human_message = text
            self._emit("human_input", "message", text, {"message_id": message.id})

    def record_error(self, exc: BaseException) -> None:
        """The ``run_error`` row of a run that raised."""
        self._emit("run_error", "lifecycle", {"error": type(exc).__name__, "message": str(exc)}, {})

    # -- LangChain callbacks ------------------------------------------------------------

    def _started(
        self,
        run_id: UUID,
        serialized: dict[str, Any] | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        caller = caller_of(metadata, tags)
        self._starts[run_id] = (time.monotonic(), caller, model_hint(serialized, kwargs))

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._started(run_id, serialized, tags, metadata, kwargs)

    async def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._started(run_id, serialized, tags, metadata, kwargs)

    async def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        started, caller, hint = self._starts.pop(run_id, (None, None, None))
        if caller is None:
            caller = caller_of(None, tags)
        latency_ms = None if started is None else round((time.monotonic() - started) * 1000, 3)
        generation = (
            response.generations[0][0] if response.generations and response.generations[0] else None
        )
        message = getattr(generation, "message", None)
        model = model_name_of(message, response.llm_output, hint)
        usage = usage_of(message, response.llm_output)
        self.llm_call_count += 1
        index = self.llm_call_count
        counted = usage or zero_usage()
        add_usage(self.usage, counted)
        for bucket in (
            self.usage_by_model.setdefault(model, {**zero_usage(), "llm_calls": 0}),
            self.usage_by_caller.setdefault(caller, {**zero_usage(), "llm_calls": 0}),
        ):
            add_usage(bucket, {**counted, "llm_calls": 1})
        trace = {
            "model": model,
            "caller": caller,
            "usage": counted,
            "latency_ms": latency_ms,
            "llm_call_index": index,
        }
        self._emit("llm_end", "trace", trace, {"caller": caller, "model": model})
        if caller == MIDDLEWARE or generation is None:
            return
        text = message.text if isinstance(message, BaseMessage) else str(generation.text)
        if text:
            self.last_ai_message = text[:LAST_AI_MESSAGE_LIMIT]
        tool_calls = [
            {"name": call["name"], "args": call["args"], "id": call.get("id")}
            for call in getattr(message, "tool_calls", None) or ()
        ]
        metadata = {
            "caller": caller,
            "model": model,
            "usage": counted,
            "tool_calls": tool_calls,
            "message_id": getattr(message, "id", None),
            "llm_call_index": index,
        }
        self._emit("ai_message", "message", text, metadata)

    async def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        _, caller, _ = self._starts.pop(run_id, (None, None, None))
        content = {"error": type(error).__name__, "message": str(error), "caller": caller}
        self._emit("llm_error", "trace", content, {"caller": caller})

    async def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = {
            "tool": kwargs.get("name") or getattr(output, "name", None),
            "tool_call_id": getattr(output, "tool_call_id", None),
            "status": getattr(output, "status", None),
        }
        self._emit("tool_end", "message", text_of(output), metadata)

    async def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        content = {"error": type(error).__name__, "message": str(error), "tool": kwargs.get("name")}
        self._emit("tool_error", "trace", content, {})

    # -- end of run ---------------------------------------------------------------------

    async def finish(self, *, status: str, error: str | None = None) -> bool:
        """Flush (bounded by the writer's ``flush_timeout``), then the delivery receipt.

        Returns True when every row and the receipt were written. The
        receipt is ``put_if_absent``: a second call for the same run is a no-op.
        """
        written = await self.writer.close()
        receipt = {
            "status": status,
            "error": error,
            "events_written": self.writer.written,
            "events_dropped": self.writer.dropped,
            "events_unwritten": self.writer.unwritten,
        }
        event = NewEvent(
            thread_id=self.thread_id,
            run_id=self.run_id,
            event_type="run.delivery",
            category="lifecycle",
            content=receipt,
            metadata={},
            user_id=self.user_id,
        )
        self.delivered = await self.writer.put_singleton(event)
        return written and self.delivered

    def completion_stats(self) -> dict[str, Any]:
        """The run row's completion statistics (``COMPLETION_FIELDS``), from the counters."""
        by_caller = self.usage_by_caller
        subagent = sum(
            u.get("total_tokens", 0) for c, u in by_caller.items() if c.startswith("subgraph:")
        )
        return {
            "total_input_tokens": self.usage["input_tokens"],
            "total_output_tokens": self.usage["output_tokens"],
            "total_tokens": self.usage["total_tokens"],
            "llm_call_count": self.llm_call_count,
            "lead_agent_tokens": by_caller.get(LEAD_AGENT, {}).get("total_tokens", 0),
            "subagent_tokens": subagent,
            "middleware_tokens": by_caller.get(MIDDLEWARE, {}).get("total_tokens", 0),
            "token_usage_by_model": {model: dict(u) for model, u in self.usage_by_model.items()},
            "message_count": self.message_count,
            "first_human_message": self.first_human_message,
            "last_ai_message": self.last_ai_message,
        }
