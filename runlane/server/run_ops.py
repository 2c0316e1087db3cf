"""Run operations shared by the thread-bound and the stateless runs routes.

- :func:`admit_run`: resolve the assistant, make sure the thread exists
  (creating it for ``if_not_exists="create"`` and stateless runs), admit the
  run into the thread's lane and hand it to the executor. Every check that
  can fail runs before anything is written; a thread this call created is
  deleted again if admission then fails, so nothing is left half-created.
- :func:`run_view`: a run as the API shows it.
- :func:`stream_run`: the SSE response for a run (create-stream and joins).
- :func:`wait_run`: the keep-alive JSON response with the run's final output.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from runlane.exceptions import (
    BadRequestError,
    InvalidInputError,
    RunNotFoundError,
    ThreadNotFoundError,
)
from runlane.executor.request import RunRequest
from runlane.graphs.assistants import (
    AssistantNotFoundError,
    default_assistant,
    resolve_assistant_id,
)
from runlane.runtime.runs.schemas import COMPLETION_FIELDS, CancelAction, RunRecord
from runlane.runtime.stream_bridge import (
    TERMINAL_STATES,
    StreamEvent,
)
from runlane.runtime.stream_bridge.base import parse_cursor
from runlane.server.keepalive import KeepAliveJSONResponse
from runlane.server.metrics import RUNS_CREATED
from runlane.server.models import RunCreate, server_config
from runlane.server.services import Services
from runlane.server.sse import EventStreamResponse, mode_filter

__all__ = [
    "admit_and_stream",
    "admit_and_wait",
    "admit_run",
    "cancel_callback",
    "find_run",
    "join_cursor",
    "run_output",
    "run_view",
    "stream_run",
    "wait_run",
]

logger = logging.getLogger(__name__)

_STATS_DEFAULTS: dict[str, Any] = {"token_usage_by_model": {}}


def run_view(record: RunRecord) -> dict[str, Any]:
    """The API's Run object; completion statistics only when the run has any."""
    view: dict[str, Any] = {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "assistant_id": record.assistant_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "status": record.status.value if hasattr(record.status, "value") else record.status,
        "metadata": record.metadata,
        "multitask_strategy": record.multitask_strategy,
        "kwargs": record.kwargs,
    }
    if record.error:
        view["error"] = record.error
    stats = {name: getattr(record, name) for name in COMPLETION_FIELDS}
    if any(value and value != _STATS_DEFAULTS.get(name) for name, value in stats.items()):
        view.update(stats)
    return view


async def _assistant(services: Services, assistant_id: str) -> dict[str, Any]:
    resolved = resolve_assistant_id(assistant_id, services.registry.graph_ids)
    assistant = await services.assistants.get(resolved)
    if assistant is None:
        for graph_id in services.registry.graph_ids:
            default = default_assistant(graph_id)
            if default["assistant_id"] == resolved:
                return default
        raise AssistantNotFoundError(f"no assistant has the id {assistant_id!r}")
    return assistant


def _merge(base: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base or {})
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _checkpoint(body: RunCreate) -> dict[str, Any] | None:
    """``checkpoint``/``checkpoint_id``/``configurable.checkpoint_id`` as the executor's
    ``{checkpoint_id, checkpoint_map}`` (the thread is always the run's own)."""
    raw = dict(body.checkpoint or {})
    configurable = (body.config or {}).get("configurable") or {}
    checkpoint_id = body.checkpoint_id or raw.get("checkpoint_id")
    checkpoint_id = checkpoint_id or configurable.get("checkpoint_id")
    if not checkpoint_id and not raw.get("checkpoint_map"):
        return None
    out: dict[str, Any] = {"checkpoint_id": checkpoint_id}
    if raw.get("checkpoint_map"):
        out["checkpoint_map"] = raw["checkpoint_map"]
    return out


async def admit_run(
    services: Services,
    body: RunCreate,
    *,
    thread_id: str | None,
    user_id: str | None = None,
) -> RunRecord:
    """Create, admit and submit a run (see the module docstring).

    ``thread_id=None`` is a stateless run on a new thread, deleted when the
    run ends unless ``on_completion="keep"``. Raises AssistantNotFoundError /
    ThreadNotFoundError (404), ConflictError (409) and InvalidInputError (422).
    """
    stateless = thread_id is None
    if not stateless and body.on_completion is not None:
        raise InvalidInputError(
            "on_completion applies to stateless runs (POST /runs) only; remove it"
        )
    assistant = await _assistant(services, body.assistant_id)
    tid = thread_id or str(uuid.uuid4())
    # As the reference does, a thread remembers the graph and assistant of its runs.
    stamp = {"graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}
    created = False
    thread = None if stateless else await services.threads.get(tid, user_id=user_id)
    if stateless:
        await services.threads.create(tid, user_id=user_id, metadata=stamp, if_exists="raise")
        created = True
    elif thread is None:
        if body.if_not_exists != "create":
            raise ThreadNotFoundError(
                f"no thread has the id {tid!r} (pass if_not_exists='create' to create it)"
            )
        await services.threads.create(tid, user_id=user_id, metadata=stamp, if_exists="do_nothing")
        created = True
    elif any(thread["metadata"].get(key) != value for key, value in stamp.items()):
        await services.threads.update(tid, metadata=stamp, user_id=user_id)
    run_id = str(uuid.uuid4())
    config = server_config(
        _merge(assistant.get("config"), body.config),
        thread_id=tid,
        run_id=run_id,
        assistant_id=assistant["assistant_id"],
        graph_id=assistant["graph_id"],
        user_id=user_id,
    )
    config["configurable"].pop("checkpoint_id", None)
    request = RunRequest(
        graph_id=assistant["graph_id"],
        assistant_id=assistant["assistant_id"],
        input=body.input,
        command=body.command,
        config=config,
        context=_merge(assistant.get("context"), body.context),
        stream_mode=list(body.stream_mode),
        stream_subgraphs=body.stream_subgraphs,
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
        checkpoint=_checkpoint(body),
        durability=body.effective_durability,
        after_seconds=body.after_seconds,
        temporary=stateless and body.on_completion != "keep",
    )
    try:
        record = await services.manager.create_or_reject(
            tid,
            assistant["assistant_id"],
            user_id=user_id,
            on_disconnect=body.on_disconnect,
            metadata=body.metadata or {},
            kwargs=request.to_kwargs(),
            multitask_strategy=body.multitask_strategy,
            run_id=run_id,
        )
    except BaseException:
        if created:
            await services.threads.delete(tid)
        raise
    try:
        await services.executor.submit(record)
    except BaseException:
        logger.exception("run %s: submit failed; cancelling it", record.run_id)
        await services.manager.cancel(record.run_id)
        raise
    RUNS_CREATED.inc()
    return record


async def find_run(
    services: Services, run_id: str, *, thread_id: str | None, user_id: str | None = None
) -> RunRecord:
    """The run (on ``thread_id`` when given), else RunNotFoundError (404)."""
    record = await services.manager.get(run_id, user_id=user_id)
    if record is None or (thread_id is not None and record.thread_id != thread_id):
        where = f" on thread {thread_id!r}" if thread_id is not None else ""
        raise RunNotFoundError(f"no run has the id {run_id!r}{where}")
    return record


def cancel_callback(services: Services, run_id: str) -> Callable[[], Awaitable[Any]]:
    """What ``on_disconnect=cancel`` does: interrupt the run."""

    async def cancel() -> None:
        logger.info("run %s: client disconnected; cancelling (on_disconnect=cancel)", run_id)
        await services.manager.cancel(run_id, action=CancelAction.interrupt)

    return cancel


def join_cursor(header: str | None, query: str | None) -> str | None:
    """The resume cursor: ``Last-Event-ID`` header, else ``?last_event_id=``;
    ``-1``/``-`` mean from the start (``"0"``). A malformed one is BadRequestError."""
    raw = header if header not in (None, "") else query
    if raw is None or raw == "":
        return None
    raw = raw.strip()
    if raw in ("-1", "-"):
        return "0"
    try:
        parse_cursor(raw)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    return raw


async def stream_run(
    services: Services,
    record: RunRecord | None,
    run_id: str,
    *,
    cursor: str | None,
    location: str,
    content_location: str,
    modes: list[str] | None = None,
    on_disconnect: Callable[[], Awaitable[Any]] | None = None,
    live: bool = False,
) -> EventStreamResponse:
    """The SSE response for ``run_id`` strictly after ``cursor``.

    ``live`` (a join without cursor): from the newest entry on (the entry
    itself when it is the terminal one, so a finished run still ends with
    ``end``). A finished run whose stream is gone is answered at once with
    just its ``end`` frame (no id: the entry is gone).
    """
    settings = services.settings
    bridge = services.bridge
    if not await bridge.stream_exists(run_id):
        if record is None:
            raise RunNotFoundError(f"no run has the id {run_id!r}")
        if not record.is_active:
            status = record.status.value
            data = {"run_id": run_id, "status": status, "error": record.error}
            end = StreamEvent("", "end", data, terminal=True)
            return EventStreamResponse(
                _once(end),
                run_id=run_id,
                location=location,
                content_location=content_location,
                heartbeat_interval=settings.heartbeat_interval,
                send_timeout=settings.send_timeout,
            )
    prime = cursor not in (None, "0")
    if live and cursor is None:
        newest = await bridge.latest_event_id(run_id)
        if newest is not None:
            ended = await bridge.get_status(run_id) in TERMINAL_STATES
            cursor = str(max(int(newest) - 1, 0)) if ended else newest
    source = bridge.subscribe(
        run_id, last_event_id=cursor, heartbeat_interval=settings.heartbeat_interval
    )
    return EventStreamResponse(
        source,
        run_id=run_id,
        location=location,
        content_location=content_location,
        heartbeat_interval=settings.heartbeat_interval,
        send_timeout=settings.send_timeout,
        on_disconnect=on_disconnect,
        event_filter=mode_filter(modes),
        prime=prime,
        streams=services.streams,
    )


async def _once(event: StreamEvent) -> Any:
    yield event


async def run_output(services: Services, run_id: str, thread_id: str | None) -> Any:
    """The run's final output once it has ended: the executor's wait/join body
    (``{"__error__": ...}``, the last values with ``__interrupt__``, the
    thread's values, or ``{}``)."""
    return await services.executor.wait_output(run_id, thread_id=thread_id)


def wait_run(
    services: Services,
    run_id: str,
    thread_id: str | None,
    *,
    headers: dict[str, str],
    on_disconnect: Callable[[], Awaitable[Any]] | None = None,
) -> KeepAliveJSONResponse:
    """The keep-alive JSON response carrying :func:`run_output`."""
    settings = services.settings
    return KeepAliveJSONResponse(
        lambda: run_output(services, run_id, thread_id),
        heartbeat_interval=settings.heartbeat_interval,
        send_timeout=settings.send_timeout,
        headers=headers,
        on_disconnect=on_disconnect,
    )


def _run_path(thread_id: str | None, run_id: str) -> str:
    """The run's URL: under its thread, or ``/runs/{rid}`` for a stateless run."""
    return f"/runs/{run_id}" if thread_id is None else f"/threads/{thread_id}/runs/{run_id}"


def _creator_disconnect(
    services: Services, body: RunCreate, run_id: str
) -> Callable[[], Awaitable[Any]] | None:
    return cancel_callback(services, run_id) if body.on_disconnect == "cancel" else None


async def admit_and_stream(
    services: Services, body: RunCreate, *, thread_id: str | None
) -> EventStreamResponse:
    """Admit a run and stream it from its first event (``thread_id=None``: stateless)."""
    record = await admit_run(services, body, thread_id=thread_id)
    run = _run_path(thread_id, record.run_id)
    return await stream_run(
        services,
        record,
        record.run_id,
        cursor="0",
        location=f"{run}/stream",
        content_location=run,
        on_disconnect=_creator_disconnect(services, body, record.run_id),
    )


async def admit_and_wait(
    services: Services, body: RunCreate, *, thread_id: str | None
) -> KeepAliveJSONResponse:
    """Admit a run and answer with its final output (``thread_id=None``: stateless)."""
    record = await admit_run(services, body, thread_id=thread_id)
    run = _run_path(thread_id, record.run_id)
    return wait_run(
        services,
        record.run_id,
        record.thread_id,
        headers={"Location": f"{run}/join", "Content-Location": run},
        on_disconnect=_creator_disconnect(services, body, record.run_id),
    )
