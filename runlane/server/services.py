"""Everything a request handler needs, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from sqlalchemy.ext.asyncio import AsyncEngine

    from runlane.config import Settings
    from runlane.executor.executor import RunExecutor
    from runlane.graphs.registry import GraphRegistry
    from runlane.runtime.assistants.base import AssistantStore
    from runlane.runtime.events.base import EventStore
    from runlane.runtime.runs.manager import RunManager
    from runlane.runtime.runs.store.base import RunStore
    from runlane.runtime.stream_bridge.base import StreamBridge
    from runlane.runtime.threads.base import ThreadStore
    from runlane.server.cluster import ClusterMember
    from runlane.server.sse import OpenStreams

__all__ = ["Services", "get_services"]


@dataclass(frozen=True, slots=True)
class Services:
    """The process's long-lived parts, in the order the lifespan opens them."""

    settings: Settings
    engine: AsyncEngine
    runs: RunStore
    threads: ThreadStore
    assistants: AssistantStore
    bridge: StreamBridge
    checkpointer: BaseCheckpointSaver[str]
    registry: GraphRegistry
    manager: RunManager
    executor: RunExecutor
    events: EventStore
    streams: OpenStreams
    cluster: ClusterMember


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the Services of the app serving ``request``.

    ``async`` so FastAPI calls it on the event loop; a plain function would
    cost every request a trip to the thread pool.
    """
    services: Services = request.app.state.services
    return services
