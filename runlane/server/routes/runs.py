"""Thread-bound runs: create, stream, wait, join, join_stream, get, list, cancel, delete.

=======  ======================================  =============================================
method   path                                    success; errors
=======  ======================================  =============================================
POST     /threads/{tid}/runs                     200 Run + Content-Location; 404 409 422
POST     /threads/{tid}/runs/stream              200 SSE from the first event; 404 409 422
POST     /threads/{tid}/runs/wait                200 final output (keep-alive JSON); 404 409 422
GET      /threads/{tid}/runs                     200 [Run] newest first; 404 thread
GET      /threads/{tid}/runs/{rid}               200 Run; 404
GET      /threads/{tid}/runs/{rid}/join          200 final output (keep-alive JSON); 404
GET      /threads/{tid}/runs/{rid}/stream        200 SSE after the cursor; 400 cursor, 404, 422
POST     /threads/{tid}/runs/{rid}/cancel        202 empty, or 200 final output with wait; 404
DELETE   /threads/{tid}/runs/{rid}               204; 404, 409 while active
=======  ======================================  =============================================

Streams and waits carry ``Location`` (``.../stream`` for SSE, ``.../join``
for JSON: what the SDK GETs to resume) and ``Content-Location`` (the run).
``on_disconnect=cancel`` cancels the run only when the connection that
created it goes away; a join cancels only when it asks with
``cancel_on_disconnect=true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response

from runlane.exceptions import ConflictError, RunNotFoundError
from runlane.runtime.runs.schemas import CancelAction, RunStatus
from runlane.server.keepalive import KeepAliveJSONResponse
from runlane.server.models import RunCreate, parse_stream_modes
from runlane.server.permissions import requires
from runlane.server.run_ops import (
    admit_and_stream,
    admit_and_wait,
    admit_run,
    cancel_callback,
    find_run,
    join_cursor,
    run_view,
    stream_run,
    wait_run,
)
from runlane.server.services import Services, get_services
from runlane.server.sse import EventStreamResponse
from runlane.server.thread_ops import require_thread

__all__ = [
    "cancel_run",
    "create_and_stream",
    "create_and_wait",
    "create_run",
    "delete_run",
    "get_run",
    "join_run",
    "join_stream",
    "list_runs",
    "router",
]

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["runs"])

ServicesDep = Annotated[Services, Depends(get_services)]


@router.post("", dependencies=[requires("runs", "create")])
async def create_run(
    thread_id: str, body: RunCreate, response: Response, services: ServicesDep
) -> dict[str, Any]:
    """Create a run in the background."""
    record = await admit_run(services, body, thread_id=thread_id)
    response.headers["Content-Location"] = f"/threads/{thread_id}/runs/{record.run_id}"
    return run_view(record)


@router.post(
    "/stream",
    dependencies=[requires("runs", "create")],
    response_class=EventStreamResponse,
    status_code=200,
)
async def create_and_stream(
    thread_id: str, body: RunCreate, services: ServicesDep
) -> EventStreamResponse:
    """Create a run and stream it from its first event."""
    return await admit_and_stream(services, body, thread_id=thread_id)


@router.post(
    "/wait",
    dependencies=[requires("runs", "create")],
    response_class=KeepAliveJSONResponse,
    status_code=200,
)
async def create_and_wait(
    thread_id: str, body: RunCreate, services: ServicesDep
) -> KeepAliveJSONResponse:
    """Create a run and answer with its final output."""
    return await admit_and_wait(services, body, thread_id=thread_id)


@router.get("", dependencies=[requires("runs", "search")])
async def list_runs(
    thread_id: str,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: RunStatus | None = None,
    select: Annotated[list[str] | None, Query()] = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first."""
    await require_thread(services, thread_id)
    fetch = 10_000 if status is not None else offset + limit
    records = await services.manager.list_by_thread(thread_id, limit=fetch)
    if status is not None:
        records = [r for r in records if r.status == status]
    views = [run_view(r) for r in records[offset : offset + limit]]
    if select:
        from runlane.server.projection import project

        views = project(views, select)
    return views


@router.get("/{run_id}", dependencies=[requires("runs", "read")])
async def get_run(thread_id: str, run_id: str, services: ServicesDep) -> dict[str, Any]:
    """One run."""
    return run_view(await find_run(services, run_id, thread_id=thread_id))


@router.get(
    "/{run_id}/join",
    dependencies=[requires("runs", "read")],
    response_class=KeepAliveJSONResponse,
    status_code=200,
)
async def join_run(
    thread_id: str, run_id: str, services: ServicesDep, cancel_on_disconnect: bool = False
) -> KeepAliveJSONResponse:
    """Wait for the run to end; its final output."""
    await find_run(services, run_id, thread_id=thread_id)
    run = f"/threads/{thread_id}/runs/{run_id}"
    return wait_run(
        services,
        run_id,
        thread_id,
        headers={"Location": f"{run}/join", "Content-Location": run},
        on_disconnect=cancel_callback(services, run_id) if cancel_on_disconnect else None,
    )


@router.get(
    "/{run_id}/stream",
    dependencies=[requires("runs", "read")],
    response_class=EventStreamResponse,
    status_code=200,
)
async def join_stream(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: str | None = None,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: bool = False,
) -> EventStreamResponse:
    """The run's stream strictly after ``Last-Event-ID`` (or ``?last_event_id=``);
    without a cursor, live from now. ``stream_mode`` narrows it (repeated keys,
    commas or a JSON array; empty: every mode of the run)."""
    try:
        modes = parse_stream_modes(stream_mode or [])
    except ValueError as exc:
        from runlane.exceptions import InvalidInputError

        raise InvalidInputError(str(exc)) from None
    cursor = join_cursor(last_event_id_header, last_event_id)
    record = await find_run(services, run_id, thread_id=thread_id)
    run = f"/threads/{thread_id}/runs/{run_id}"
    return await stream_run(
        services,
        record,
        run_id,
        cursor=cursor,
        location=f"{run}/stream",
        content_location=run,
        modes=modes,
        live=True,
        on_disconnect=cancel_callback(services, run_id) if cancel_on_disconnect else None,
    )


@router.post("/{run_id}/cancel", dependencies=[requires("runs", "update")], response_model=None)
async def cancel_run(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    wait: bool = False,
    action: CancelAction = CancelAction.interrupt,
) -> Response:
    """Cancel the run (``action`` interrupt keeps its checkpoints, rollback removes
    the run and them). 202 at once, or with ``wait`` its final output once it stopped."""
    record = await find_run(services, run_id, thread_id=thread_id)
    if not await services.manager.cancel(run_id, action=action):
        raise RunNotFoundError(
            f"run {run_id!r} cannot be cancelled: it already ended ({record.status.value})"
        )
    if not wait:
        return Response(status_code=202)
    return wait_run(services, run_id, thread_id, headers={})


@router.delete(
    "/{run_id}", dependencies=[requires("runs", "delete")], status_code=204, response_model=None
)
async def delete_run(thread_id: str, run_id: str, services: ServicesDep) -> Response:
    """Delete an ended run and its stream (409 while it is pending or running)."""
    record = await find_run(services, run_id, thread_id=thread_id)
    if record.is_active:
        raise ConflictError(f"run {run_id!r} is {record.status.value}: cancel it first")
    await services.manager.delete(run_id)
    await services.bridge.cleanup(run_id)
    return Response(status_code=204)
