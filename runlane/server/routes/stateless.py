"""Stateless runs: each on a new temporary thread, plus batch and bulk cancel.

=======  ==========================  ==================================================
method   path                        success; errors
=======  ==========================  ==================================================
POST     /runs                       200 Run + Content-Location /runs/{rid}; 404 422
POST     /runs/stream                200 SSE, Location /runs/{rid}/stream; 404 422
POST     /runs/wait                  200 final output (keep-alive JSON); 404 422
POST     /runs/batch                 200 [Run]; 404 409 422 (nothing created then)
POST     /runs/cancel                204; 404 unknown run, 422
GET      /runs/{rid}                 200 Run; 404
GET      /runs/{rid}/stream          200 SSE after the cursor; 400 404 422
GET      /runs/{rid}/join            200 final output; 404
=======  ==========================  ==================================================

The temporary thread is deleted when the run ends (``on_completion="delete"``,
the default) or kept (``"keep"``). ``Location`` points at ``/runs/{rid}/...``,
which stays valid as long as the run's stream is retained, even after its
thread (and with it the run row) was deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import ValidationError

from runlane.exceptions import InvalidInputError, RunNotFoundError, ThreadNotFoundError
from runlane.runtime.runs.schemas import CancelAction, RunRecord
from runlane.server.errors import validation_message
from runlane.server.keepalive import KeepAliveJSONResponse
from runlane.server.models import (
    RunBatchItem,
    RunCancelMany,
    RunCreate,
    StatelessRunCreate,
    parse_stream_modes,
)
from runlane.server.permissions import requires
from runlane.server.run_ops import (
    admit_and_stream,
    admit_and_wait,
    admit_run,
    cancel_callback,
    join_cursor,
    run_view,
    stream_run,
    wait_run,
)
from runlane.server.services import Services, get_services
from runlane.server.sse import EventStreamResponse

__all__ = [
    "cancel_many",
    "create_batch",
    "create_stateless_run",
    "get_stateless_run",
    "join_stateless_run",
    "join_stateless_stream",
    "router",
    "stream_stateless_run",
    "wait_stateless_run",
]

router = APIRouter(prefix="/runs", tags=["stateless runs"])

ServicesDep = Annotated[Services, Depends(get_services)]


@router.post("", dependencies=[requires("runs", "create")])
async def create_stateless_run(
    body: StatelessRunCreate, response: Response, services: ServicesDep
) -> dict[str, Any]:
    """Create a run on a new temporary thread, in the background."""
    record = await admit_run(services, body, thread_id=None)
    response.headers["Content-Location"] = f"/runs/{record.run_id}"
    return run_view(record)


@router.post(
    "/stream",
    dependencies=[requires("runs", "create")],
    response_class=EventStreamResponse,
    status_code=200,
)
async def stream_stateless_run(
    body: StatelessRunCreate, services: ServicesDep
) -> EventStreamResponse:
    """Create a run on a new temporary thread and stream it."""
    return await admit_and_stream(services, body, thread_id=None)


@router.post(
    "/wait",
    dependencies=[requires("runs", "create")],
    response_class=KeepAliveJSONResponse,
    status_code=200,
)
async def wait_stateless_run(
    body: StatelessRunCreate, services: ServicesDep
) -> KeepAliveJSONResponse:
    """Create a run on a new temporary thread and answer with its final output."""
    return await admit_and_wait(services, body, thread_id=None)


@router.post("/batch", dependencies=[requires("runs", "create")])
async def create_batch(body: list[RunBatchItem], services: ServicesDep) -> list[dict[str, Any]]:
    """Create several runs, each stateless or on its ``thread_id``.

    Every item is validated, and every named thread must exist (or the item
    says ``if_not_exists="create"``), before the first run is created. If an
    admission still fails (409 on a busy thread with ``reject``), the runs
    this batch created are cancelled and the error is returned.
    """
    plan: list[tuple[RunCreate, str | None]] = []
    for index, item in enumerate(body):
        fields = item.model_dump(exclude={"thread_id"}, exclude_unset=True)
        model = RunCreate if item.thread_id is not None else StatelessRunCreate
        try:
            plan.append((model.model_validate(fields), item.thread_id))
        except ValidationError as exc:
            raise InvalidInputError(
                f"item {index}: " + validation_message(exc.errors()).removeprefix("Invalid ")
            ) from None
        must_exist = item.thread_id is not None and item.if_not_exists != "create"
        if must_exist and await services.threads.get(str(item.thread_id)) is None:
            raise ThreadNotFoundError(f"item {index}: no thread has the id {item.thread_id!r}")
    created: list[RunRecord] = []
    try:
        for run_body, thread_id in plan:
            created.append(await admit_run(services, run_body, thread_id=thread_id))
    except BaseException:
        for record in created:
            await services.manager.cancel(record.run_id)
        raise
    return [run_view(record) for record in created]


@router.post(
    "/cancel", dependencies=[requires("runs", "update")], status_code=204, response_model=None
)
async def cancel_many(
    body: RunCancelMany, services: ServicesDep, action: CancelAction = CancelAction.interrupt
) -> Response:
    """Cancel ``run_ids`` of ``thread_id``, or every run with ``status``
    (``pending``, ``running`` or ``all`` active runs)."""
    if body.thread_id is not None and body.run_ids:
        records = []
        for run_id in body.run_ids:
            record = await services.manager.get(run_id)
            if record is None or record.thread_id != body.thread_id:
                raise RunNotFoundError(f"no run has the id {run_id!r} on thread {body.thread_id!r}")
            records.append(record)
        for record in records:
            await services.manager.cancel(record.run_id, action=action)
        return Response(status_code=204)
    wanted = {"pending", "running"} if body.status == "all" else {body.status}
    threads = await services.threads.search(status="busy", limit=10_000)
    for thread in threads:
        for record in await services.manager.list_by_thread(thread["thread_id"], limit=10_000):
            if record.status.value in wanted:
                await services.manager.cancel(record.run_id, action=action)
    return Response(status_code=204)


async def _stateless_record(services: Services, run_id: str) -> RunRecord | None:
    record = await services.manager.get(run_id)
    if record is None and not await services.bridge.stream_exists(run_id):
        raise RunNotFoundError(f"no run has the id {run_id!r}")
    return record


@router.get("/{run_id}", dependencies=[requires("runs", "read")])
async def get_stateless_run(run_id: str, services: ServicesDep) -> dict[str, Any]:
    """One run, by id alone."""
    record = await services.manager.get(run_id)
    if record is None:
        raise RunNotFoundError(f"no run has the id {run_id!r}")
    return run_view(record)


@router.get(
    "/{run_id}/stream",
    dependencies=[requires("runs", "read")],
    response_class=EventStreamResponse,
    status_code=200,
)
async def join_stateless_stream(
    run_id: str,
    services: ServicesDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: str | None = None,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: bool = False,
) -> EventStreamResponse:
    """Like ``/threads/{tid}/runs/{rid}/stream``, by run id alone."""
    try:
        modes = parse_stream_modes(stream_mode or [])
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    cursor = join_cursor(last_event_id_header, last_event_id)
    record = await _stateless_record(services, run_id)
    run = f"/runs/{run_id}"
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


@router.get(
    "/{run_id}/join",
    dependencies=[requires("runs", "read")],
    response_class=KeepAliveJSONResponse,
    status_code=200,
)
async def join_stateless_run(
    run_id: str, services: ServicesDep, cancel_on_disconnect: bool = False
) -> KeepAliveJSONResponse:
    """Wait for the run to end; its final output."""
    record = await _stateless_record(services, run_id)
    run = f"/runs/{run_id}"
    return wait_run(
        services,
        run_id,
        record.thread_id if record is not None else None,
        headers={"Location": f"{run}/join", "Content-Location": run},
        on_disconnect=cancel_callback(services, run_id) if cancel_on_disconnect else None,
    )
