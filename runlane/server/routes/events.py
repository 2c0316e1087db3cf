"""The run event log over HTTP (runlane extensions to the LangGraph Platform API).

=======  ======================================  =============================================
method   path                                    success; errors
=======  ======================================  =============================================
GET      /threads/{tid}/runs/{rid}/events        200 page of the run's events; 404, 422
GET      /threads/{tid}/messages                 200 page of the thread's messages; 404, 422
GET      /threads/{tid}/runs/{rid}/messages      200 page of the run's messages; 404, 422
GET      /threads/{tid}/token-usage              200 token usage: total, by model, by caller; 404
=======  ======================================  =============================================

A page is ``{"items": [...], "has_more": bool}`` with items in ascending
``seq``. ``after_seq`` pages forward (the first ``limit`` events after it);
``before_seq`` alone pages backward (the last ``limit`` events before it,
still ascending); neither gives the oldest. Messages are the ``message``
category: human input, model responses and tool results, in order.

Token usage adds up the ``llm_end`` rows of every run of the thread. An
unknown thread, or a run not on that thread, is 404; ownership follows the
thread's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from runlane.runtime.events.base import EventPage
from runlane.server.deps import ServicesDep
from runlane.server.permissions import requires
from runlane.server.run_ops import find_run
from runlane.server.services import Services
from runlane.server.thread_ops import require_thread

__all__ = [
    "Event",
    "EventsPage",
    "ThreadTokenUsage",
    "TokenUsage",
    "list_run_events",
    "list_run_messages",
    "list_thread_messages",
    "router",
    "thread_token_usage",
]

router = APIRouter(tags=["events"])

MAX_PAGE = 1000
"""The largest ``limit`` a page may ask for."""

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


class Event(BaseModel):
    """One event of the run event log."""

    thread_id: str
    run_id: str
    event_type: str = Field(description="human_input, ai_message, tool_end, llm_end, ...")
    category: str = Field(description="message, trace or lifecycle")
    content: Any = Field(default=None, description="text or JSON")
    metadata: dict[str, Any] = Field(default_factory=dict)
    seq: int = Field(description="dense and strictly increasing per thread")
    created_at: str


class EventsPage(BaseModel):
    """A page of events in ascending ``seq``."""

    items: list[Event]
    has_more: bool = Field(description="more events lie beyond this page in its direction")


class TokenUsage(BaseModel):
    """Tokens and model calls added up."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    llm_calls: int = 0


class ThreadTokenUsage(BaseModel):
    """A thread's token usage: in total, per model, per caller."""

    total: TokenUsage
    by_model: dict[str, TokenUsage]
    by_caller: dict[str, TokenUsage] = Field(
        description="lead_agent, subgraph:<names> or middleware"
    )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Seq = Annotated[int | None, Query(ge=0)]


def _page(page: EventPage) -> EventsPage:
    items = [Event(**{k: v for k, v in item.items() if k != "user_id"}) for item in page.items]
    return EventsPage(items=items, has_more=page.has_more)


async def _require_run(services: Services, thread_id: str, run_id: str) -> None:
    await require_thread(services, thread_id)
    await find_run(services, run_id, thread_id=thread_id)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/events",
    dependencies=[requires("runs", "read")],
    response_model=EventsPage,
)
async def list_run_events(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    types: Annotated[list[str] | None, Query(description="keep only these event types")] = None,
    limit: Limit = 100,
    after_seq: Seq = None,
) -> EventsPage:
    """The run's events of every category, forward from ``after_seq``."""
    await _require_run(services, thread_id, run_id)
    page = await services.events.list_events(
        thread_id, run_id, event_types=types or None, limit=limit, after_seq=after_seq
    )
    return _page(page)


@router.get(
    "/threads/{thread_id}/messages",
    dependencies=[requires("threads", "read")],
    response_model=EventsPage,
)
async def list_thread_messages(
    thread_id: str,
    services: ServicesDep,
    limit: Limit = 50,
    before_seq: Seq = None,
    after_seq: Seq = None,
) -> EventsPage:
    """The thread's messages (human input, model responses, tool results), all runs."""
    await require_thread(services, thread_id)
    page = await services.events.list_messages(
        thread_id, limit=limit, before_seq=before_seq, after_seq=after_seq
    )
    return _page(page)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/messages",
    dependencies=[requires("runs", "read")],
    response_model=EventsPage,
)
async def list_run_messages(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    limit: Limit = 50,
    before_seq: Seq = None,
    after_seq: Seq = None,
) -> EventsPage:
    """The run's messages."""
    await _require_run(services, thread_id, run_id)
    page = await services.events.list_messages_by_run(
        thread_id, run_id, limit=limit, before_seq=before_seq, after_seq=after_seq
    )
    return _page(page)


def _add(into: dict[str, int], usage: Any) -> None:
    into["llm_calls"] += 1
    if isinstance(usage, dict):
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                into[key] += value


def _zero() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "llm_calls": 0}


@router.get(
    "/threads/{thread_id}/token-usage",
    dependencies=[requires("threads", "read")],
    response_model=ThreadTokenUsage,
)
async def thread_token_usage(thread_id: str, services: ServicesDep) -> ThreadTokenUsage:
    """Tokens used by the thread's runs, from their ``llm_end`` events."""
    await require_thread(services, thread_id)
    total = _zero()
    by_model: dict[str, dict[str, int]] = {}
    by_caller: dict[str, dict[str, int]] = {}
    for record in await services.manager.list_by_thread(thread_id, limit=10_000):
        after: int | None = None
        while True:
            page = await services.events.list_events(
                thread_id, record.run_id, event_types=["llm_end"], limit=MAX_PAGE, after_seq=after
            )
            for item in page.items:
                content = item["content"] if isinstance(item["content"], dict) else {}
                usage = content.get("usage")
                _add(total, usage)
                _add(by_model.setdefault(str(content.get("model") or "unknown"), _zero()), usage)
                _add(by_caller.setdefault(str(content.get("caller") or "unknown"), _zero()), usage)
            if not page.has_more or not page.items:
                break
            after = page.items[-1]["seq"]
    return ThreadTokenUsage(
        total=TokenUsage(**total),
        by_model={name: TokenUsage(**u) for name, u in sorted(by_model.items())},
        by_caller={name: TokenUsage(**u) for name, u in sorted(by_caller.items())},
    )
