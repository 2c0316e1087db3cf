"""The threads API: threads, their state at any checkpoint, history, copy and prune.

Thread rows live in the thread store; values, checkpoints and interrupts in
the LangGraph checkpointer, read through the executor's state helpers. Every
route naming a thread answers 404 for an unknown one before doing anything.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from runlane.exceptions import ConflictError, InvalidInputError, ThreadNotFoundError
from runlane.server import state_access
from runlane.server.bodies import (
    ThreadCount,
    ThreadCreate,
    ThreadHistory,
    ThreadPatch,
    ThreadPrune,
    ThreadSearch,
    ThreadStateAtCheckpoint,
    ThreadStateUpdate,
    reject_unsupported,
)
from runlane.server.deps import ServicesDep
from runlane.server.permissions import requires
from runlane.server.projection import page_headers, project
from runlane.server.thread_ops import (
    delete_thread_everywhere,
    require_thread,
    thread_view,
    thread_views,
)

__all__ = [
    "copy_thread",
    "count_threads",
    "create_thread",
    "delete_thread",
    "get_history",
    "get_state",
    "get_state_at_checkpoint",
    "get_state_at_checkpoint_body",
    "get_thread",
    "patch_thread",
    "prune_threads",
    "router",
    "search_threads",
    "update_state",
]

router = APIRouter(prefix="/threads", tags=["threads"])


@router.post("", dependencies=[requires("threads", "create")])
async def create_thread(body: ThreadCreate, services: ServicesDep) -> dict[str, Any]:
    reject_unsupported(body, "supersteps", "ttl")
    thread_id = body.thread_id or str(uuid.uuid4())
    thread = await services.threads.create(
        thread_id, metadata=body.metadata, if_exists=body.if_exists
    )
    return await thread_view(services, thread)


@router.post("/search", dependencies=[requires("threads", "search")])
async def search_threads(
    body: ThreadSearch, response: Response, services: ServicesDep
) -> list[dict[str, Any]]:
    reject_unsupported(body, "values", "extract")
    rows = await services.threads.search(
        metadata=body.metadata,
        ids=body.ids,
        status=body.status,
        limit=body.limit + 1,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    total = (
        None
        if body.ids is not None
        else await services.threads.count(metadata=body.metadata, status=body.status)
    )
    response.headers.update(page_headers(body.offset, body.limit, len(rows), total))
    return project(await thread_views(services, rows[: body.limit]), body.select)


@router.post("/count", dependencies=[requires("threads", "search")])
async def count_threads(body: ThreadCount, services: ServicesDep) -> int:
    reject_unsupported(body, "values")
    return await services.threads.count(metadata=body.metadata, status=body.status)


@router.post("/prune", dependencies=[requires("threads", "delete")])
async def prune_threads(body: ThreadPrune, services: ServicesDep) -> dict[str, int]:
    existing = [
        thread_id
        for thread_id in dict.fromkeys(body.thread_ids)
        if await services.threads.get(thread_id) is not None
    ]
    if body.strategy == "keep_latest":
        if existing:
            await state_access.keep_latest(services, existing)
        return {"pruned_count": len(existing)}
    pruned = 0
    for thread_id in existing:
        try:
            await delete_thread_everywhere(services, thread_id)
        except ThreadNotFoundError:
            continue  # deleted meanwhile
        pruned += 1
    return {"pruned_count": pruned}


@router.get("/{thread_id}", dependencies=[requires("threads", "read")])
async def get_thread(thread_id: str, services: ServicesDep) -> dict[str, Any]:
    return await thread_view(services, await require_thread(services, thread_id))


@router.patch("/{thread_id}", dependencies=[requires("threads", "update")])
async def patch_thread(
    thread_id: str,
    body: ThreadPatch,
    services: ServicesDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Any:
    reject_unsupported(body, "ttl")
    updated = await services.threads.update(thread_id, metadata=body.metadata or {})
    if updated is None:
        raise ThreadNotFoundError(f"no thread has the id {thread_id!r}")
    if prefer is not None and "return=minimal" in prefer.replace(" ", "").lower():
        return Response(status_code=204)
    return await thread_view(services, updated)


@router.delete("/{thread_id}", status_code=204, dependencies=[requires("threads", "delete")])
async def delete_thread(thread_id: str, services: ServicesDep) -> Response:
    await delete_thread_everywhere(services, thread_id)
    return Response(status_code=204)


@router.post("/{thread_id}/copy", dependencies=[requires("threads", "create")])
async def copy_thread(thread_id: str, services: ServicesDep) -> dict[str, Any]:
    source = await require_thread(services, thread_id)
    new_id = str(uuid.uuid4())
    await state_access.copy_checkpoints(services, thread_id, new_id)
    try:
        thread = await services.threads.create(new_id, metadata=source["metadata"])
    except BaseException:
        await services.checkpointer.adelete_thread(new_id)
        raise
    return await thread_view(services, thread)


@router.get("/{thread_id}/state", dependencies=[requires("threads", "read")])
async def get_state(
    thread_id: str,
    services: ServicesDep,
    subgraphs: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    await require_thread(services, thread_id)
    return await state_access.state(services, thread_id, subgraphs=subgraphs)


@router.post("/{thread_id}/state", dependencies=[requires("threads", "update")])
async def update_state(
    thread_id: str, body: ThreadStateUpdate, services: ServicesDep
) -> dict[str, Any]:
    await require_thread(services, thread_id)
    if await services.manager.has_inflight(thread_id):
        raise ConflictError("The thread has an active run; update its state once it ends.")
    checkpoint = _checkpoint_of(thread_id, body.checkpoint, body.checkpoint_id)
    return await state_access.update(
        services, thread_id, values=body.values, as_node=body.as_node, checkpoint=checkpoint
    )


@router.post("/{thread_id}/state/checkpoint", dependencies=[requires("threads", "read")])
async def get_state_at_checkpoint_body(
    thread_id: str, body: ThreadStateAtCheckpoint, services: ServicesDep
) -> dict[str, Any]:
    await require_thread(services, thread_id)
    state = await state_access.state(
        services,
        thread_id,
        checkpoint=_checkpoint_of(thread_id, body.checkpoint, None),
        subgraphs=body.subgraphs,
    )
    return project([state], body.select)[0]


@router.get("/{thread_id}/state/{checkpoint_id}", dependencies=[requires("threads", "read")])
async def get_state_at_checkpoint(
    thread_id: str,
    checkpoint_id: str,
    services: ServicesDep,
    subgraphs: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    await require_thread(services, thread_id)
    return await state_access.state(
        services, thread_id, checkpoint={"checkpoint_id": checkpoint_id}, subgraphs=subgraphs
    )


@router.post("/{thread_id}/history", dependencies=[requires("threads", "read")])
async def get_history(
    thread_id: str, body: ThreadHistory, services: ServicesDep
) -> list[dict[str, Any]]:
    await require_thread(services, thread_id)
    before = {"checkpoint_id": body.before} if isinstance(body.before, str) else body.before
    states = await state_access.history(
        services,
        thread_id,
        limit=body.limit,
        before=_checkpoint_of(thread_id, before, None),
        metadata=body.metadata,
        checkpoint=_checkpoint_of(thread_id, body.checkpoint, None),
    )
    return project(states, body.select)


def _checkpoint_of(
    thread_id: str, checkpoint: dict[str, Any] | None, checkpoint_id: str | None
) -> dict[str, Any] | None:
    """The checkpoint a request targets, with identity keys the server owns removed.

    ``thread_id`` always comes from the path: a body naming another thread is
    refused, so no request reaches another thread's checkpoints.
    """
    if checkpoint is None and checkpoint_id is None:
        return None
    target = dict(checkpoint or {})
    if checkpoint_id is not None:
        target.setdefault("checkpoint_id", checkpoint_id)
    unknown = set(target) - {"checkpoint_id", "checkpoint_ns", "checkpoint_map", "thread_id"}
    if unknown:
        raise InvalidInputError(f"checkpoint has unknown keys: {', '.join(sorted(unknown))}.")
    if target.pop("thread_id", None) not in (None, thread_id):
        raise InvalidInputError("checkpoint.thread_id must be the thread in the path.")
    return target
