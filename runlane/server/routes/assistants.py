"""The assistants API: CRUD, search, count, versions, schemas and graph drawings.

An ``assistant_id`` in a path may be the assistant's uuid or a graph id (the
graph's default assistant). Unknown ids are 404; a graph id in a body that
``langgraph.json`` does not define is 404 too, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from runlane.exceptions import InvalidInputError
from runlane.graphs import (
    AssistantNotFoundError,
    draw_graph,
    graph_schemas,
    resolve_assistant_id,
    subgraph_schemas,
)
from runlane.server.bodies import (
    AssistantCount,
    AssistantCreate,
    AssistantLatest,
    AssistantPatch,
    AssistantSearch,
    AssistantVersions,
)
from runlane.server.deps import ServicesDep
from runlane.server.permissions import requires
from runlane.server.projection import page_headers, project
from runlane.server.services import Services

__all__ = [
    "assistant_graph",
    "assistant_schemas",
    "assistant_subgraphs",
    "assistant_subgraphs_in",
    "assistant_versions",
    "count_assistants",
    "create_assistant",
    "delete_assistant",
    "get_assistant",
    "parse_xray",
    "patch_assistant",
    "read_assistant",
    "router",
    "search_assistants",
    "set_latest_version",
]

router = APIRouter(prefix="/assistants", tags=["assistants"])


async def get_assistant(services: Services, assistant_id: str) -> dict[str, Any]:
    """The stored assistant ``assistant_id`` (uuid or graph id) names; 404 if none."""
    resolved = resolve_assistant_id(assistant_id, services.registry.graph_ids)
    assistant = await services.assistants.get(resolved)
    if assistant is None:
        raise AssistantNotFoundError(f"no assistant has the id {assistant_id!r}")
    return assistant


def parse_xray(value: str) -> bool | int:
    """``?xray=`` as the SDK sends it: ``true``/``false`` or a depth."""
    lowered = value.strip().lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no", ""):
        return False
    try:
        depth = int(lowered)
    except ValueError:
        raise InvalidInputError(f"xray must be true, false or a depth, not {value!r}.") from None
    return depth if depth > 0 else False


@router.post("", dependencies=[requires("assistants", "create")])
async def create_assistant(body: AssistantCreate, services: ServicesDep) -> dict[str, Any]:
    services.registry.entry(body.graph_id)  # GraphNotFoundError -> 404 before any write
    return await services.assistants.create(
        assistant_id=body.assistant_id,
        graph_id=body.graph_id,
        config=body.config or {},
        context=body.context or {},
        metadata=body.metadata or {},
        name=body.name,
        description=body.description,
        if_exists=body.if_exists,
    )


@router.post("/search", dependencies=[requires("assistants", "search")])
async def search_assistants(
    body: AssistantSearch, response: Response, services: ServicesDep
) -> list[dict[str, Any]]:
    rows = await services.assistants.search(
        graph_id=body.graph_id,
        name=body.name,
        metadata=body.metadata,
        limit=body.limit + 1,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    total = await services.assistants.count(
        graph_id=body.graph_id, name=body.name, metadata=body.metadata
    )
    response.headers.update(page_headers(body.offset, body.limit, len(rows), total))
    return project(rows[: body.limit], body.select)


@router.post("/count", dependencies=[requires("assistants", "search")])
async def count_assistants(body: AssistantCount, services: ServicesDep) -> int:
    return await services.assistants.count(
        graph_id=body.graph_id, name=body.name, metadata=body.metadata
    )


@router.get("/{assistant_id}", dependencies=[requires("assistants", "read")])
async def read_assistant(assistant_id: str, services: ServicesDep) -> dict[str, Any]:
    return await get_assistant(services, assistant_id)


@router.patch("/{assistant_id}", dependencies=[requires("assistants", "update")])
async def patch_assistant(
    assistant_id: str, body: AssistantPatch, services: ServicesDep
) -> dict[str, Any]:
    current = await get_assistant(services, assistant_id)
    if body.graph_id is not None:
        services.registry.entry(body.graph_id)
    updated = await services.assistants.update(
        current["assistant_id"],
        graph_id=body.graph_id,
        config=body.config,
        context=body.context,
        metadata=body.metadata,
        name=body.name,
        description=body.description,
    )
    if updated is None:
        raise AssistantNotFoundError(f"no assistant has the id {assistant_id!r}")
    return updated


@router.delete("/{assistant_id}", status_code=204, dependencies=[requires("assistants", "delete")])
async def delete_assistant(
    assistant_id: str,
    services: ServicesDep,
    delete_threads: Annotated[bool, Query()] = False,
) -> Response:
    current = await get_assistant(services, assistant_id)
    if delete_threads:
        from runlane.server.thread_ops import delete_thread_everywhere

        owned = {"assistant_id": current["assistant_id"]}
        while batch := await services.threads.search(metadata=owned, limit=100):
            for thread in batch:
                await delete_thread_everywhere(services, thread["thread_id"])
    if not await services.assistants.delete(current["assistant_id"]):
        raise AssistantNotFoundError(f"no assistant has the id {assistant_id!r}")
    return Response(status_code=204)


@router.post("/{assistant_id}/versions", dependencies=[requires("assistants", "read")])
async def assistant_versions(
    assistant_id: str, body: AssistantVersions, services: ServicesDep
) -> list[dict[str, Any]]:
    current = await get_assistant(services, assistant_id)
    return await services.assistants.versions(
        current["assistant_id"], metadata=body.metadata, limit=body.limit, offset=body.offset
    )


@router.post("/{assistant_id}/latest", dependencies=[requires("assistants", "update")])
async def set_latest_version(
    assistant_id: str, body: AssistantLatest, services: ServicesDep
) -> dict[str, Any]:
    current = await get_assistant(services, assistant_id)
    updated = await services.assistants.set_latest(current["assistant_id"], body.version)
    if updated is None:
        raise AssistantNotFoundError(f"assistant {assistant_id!r} has no version {body.version}")
    return updated


async def _graph(services: Services, assistant: dict[str, Any]) -> Any:
    config = {**(assistant.get("config") or {})}
    return await services.registry.get_graph(assistant["graph_id"], config)  # type: ignore[arg-type]


@router.get("/{assistant_id}/schemas", dependencies=[requires("assistants", "read")])
async def assistant_schemas(assistant_id: str, services: ServicesDep) -> dict[str, Any]:
    assistant = await get_assistant(services, assistant_id)
    graph = await _graph(services, assistant)
    return await run_in_threadpool(graph_schemas, graph, assistant["graph_id"])


@router.get("/{assistant_id}/graph", dependencies=[requires("assistants", "read")])
async def assistant_graph(
    assistant_id: str,
    services: ServicesDep,
    xray: Annotated[str, Query()] = "false",
) -> dict[str, Any]:
    depth = parse_xray(xray)
    assistant = await get_assistant(services, assistant_id)
    graph = await _graph(services, assistant)
    return await run_in_threadpool(draw_graph, graph, xray=depth)


@router.get("/{assistant_id}/subgraphs", dependencies=[requires("assistants", "read")])
async def assistant_subgraphs(
    assistant_id: str,
    services: ServicesDep,
    recurse: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    return await _subgraphs(services, assistant_id, None, recurse)


@router.get("/{assistant_id}/subgraphs/{namespace}", dependencies=[requires("assistants", "read")])
async def assistant_subgraphs_in(
    assistant_id: str,
    namespace: str,
    services: ServicesDep,
    recurse: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    return await _subgraphs(services, assistant_id, namespace, recurse)


async def _subgraphs(
    services: Services, assistant_id: str, namespace: str | None, recurse: bool
) -> dict[str, Any]:
    assistant = await get_assistant(services, assistant_id)
    graph = await _graph(services, assistant)
    return await run_in_threadpool(
        lambda: subgraph_schemas(graph, assistant["graph_id"], namespace=namespace, recurse=recurse)
    )
