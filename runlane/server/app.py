"""The application factory and the lifespan that opens and closes every service.

Start-up, in this order (each step's resource is closed on the way out, in
reverse, also when a later step fails):

1. the database engine and the single-process lock where the deployment
   allows one process (:mod:`runlane.server.solo`); SQLite is migrated to
   the newest schema, Postgres must already be current (``runlane migrate``)
   or the start is refused;
2. the run, thread and assistant stores (SQL), and the run event store
   (``event_store``: SQL on the same engine by default);
3. the stream bridge (memory, or Redis when ``redis_url`` is set) with the
   limits from the settings, started;
4. the checkpointer (``open_checkpointer``);
5. the graph registry from ``langgraph.json``, and one default assistant per
   graph upserted;
6. the run manager and the run executor;
7. the cluster member (:mod:`runlane.server.cluster`): orphan recovery
   (every run left active by a process that is gone ends as ``error``, its
   stream gets its terminal entry and its thread's status is recomputed;
   with SQLite, every active run is an orphan: one process only), then the
   lease keeper, the periodic sweep and, on Postgres, the notification
   listener.

Only then does the server answer requests (``/ok`` is the readiness probe).
Under ``runlane serve``, SIGTERM (or SIGINT) starts the cluster member's
drain at once, while uvicorn stops accepting connections: runs get
``shutdown_grace`` seconds, the rest are interrupted, SSE clients are told
to reconnect. On shutdown the cluster member and then the run manager are
closed first (before the bridge and the checkpointer), so runs still going
are interrupted while they can still write their final state and stream
entry.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import runlane
from runlane.config import ConfigurationError, Settings
from runlane.server.errors import install_error_handlers
from runlane.server.logs import configure_logging
from runlane.server.middleware import RequestMiddleware
from runlane.server.services import Services

__all__ = ["check_schema", "create_app", "create_app_from_env", "open_services"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, drain_on_signal: bool = False, freeze_heap: bool = False
) -> FastAPI:
    """A FastAPI app serving the LangGraph Platform API with ``settings`` (default: from env).

    ``drain_on_signal``: SIGTERM and SIGINT start the graceful drain (see the
    module docstring) before uvicorn's own shutdown; for the server process.
    ``freeze_heap``: once the services are open, every object allocated so
    far (modules, classes, graphs: ~170,000 tracked objects, ~90 ms of
    collector time) is moved out of the garbage collector's sight
    (``gc.freeze``) until shutdown, so a full collection while serving walks
    only what serving allocated and pauses the event loop that much less;
    for the server process, which lives as long as those objects.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            if drain_on_signal:
                _drain_on_signals(services)
            if freeze_heap:
                gc.collect()  # what start-up left as garbage is freed, not frozen
                gc.freeze()
            try:
                yield
            finally:
                if freeze_heap:
                    gc.unfreeze()
                del app.state.services

    app = FastAPI(
        title="runlane",
        version=runlane.__version__,
        description="LangGraph Platform API served by runlane.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    from runlane.server.routes import assistants, events, runs, stateless, system, threads

    # Routes are matched in order and no two modules share a path: the busiest
    # first (a run's create-and-stream is matched after the runs routes only).
    for module in (runs, threads, stateless, assistants, events, system):
        app.include_router(module.router)
    # One ASGI layer for the body limit, the catch-all 500 and the request count.
    install_error_handlers(app, catch_all=False)
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn's import string (workers, reload): settings and logging from env."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, drain_on_signal=True, freeze_heap=True)


def _drain_on_signals(services: Services) -> None:
    """Chain a drain start in front of the signal handlers uvicorn installed."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(services.cluster.begin_drain)
            previous(sig, frame)

        signal.signal(signum, handler)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise ConfigurationError unless the database is at the newest migration."""
    from runlane.db.migrate import HEAD, current_revisions

    current = await current_revisions(engine)
    if current != {HEAD}:
        found = ", ".join(sorted(current)) or "no runlane schema"
        raise ConfigurationError(
            f"The database schema is not current ({found}; runlane needs "
            f"{HEAD}). Run `runlane migrate` against this database first."
        )


def _bridge(settings: Settings) -> Any:
    limits: dict[str, Any] = {
        "max_events_per_stream": settings.stream_max_events,
        "max_bytes_per_stream": settings.stream_max_bytes,
        "terminal_retention_ttl": settings.stream_retention,
        "orphan_timeout": settings.stream_retention,
        "active_no_publish_timeout": settings.stream_idle_timeout,
    }
    if settings.redis_url:
        from runlane.runtime.stream_bridge.redis import RedisStreamBridge

        # Write-behind: a run's publishes are pipelined instead of costing one
        # round trip each; its terminal entry still waits until stored.
        return RedisStreamBridge(
            settings.redis_url,
            key_prefix=settings.redis_key_prefix,
            write_behind=settings.redis_write_behind,
            **limits,
        )
    from runlane.runtime.stream_bridge.memory import MemoryStreamBridge

    return MemoryStreamBridge(**limits)


def _event_store(settings: Settings, engine: AsyncEngine) -> Any:
    if settings.event_store == "memory":
        from runlane.runtime.events.memory import MemoryEventStore

        return MemoryEventStore()
    if settings.event_store == "jsonl":
        from runlane.runtime.events.jsonl import JsonlEventStore

        return JsonlEventStore(settings.data_dir / "events")
    from runlane.runtime.events.sql import SqlEventStore

    return SqlEventStore(engine)


def _sqlite_dirs(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = make_url(settings.database_url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open every service in the module docstring's order; close them in reverse."""
    from runlane.db.engine import create_engine
    from runlane.db.migrate import upgrade_in_child
    from runlane.executor.checkpointer import open_checkpointer
    from runlane.executor.executor import RunExecutor
    from runlane.graphs import GraphRegistry, default_assistant, load_config
    from runlane.runtime.assistants.sql import SqlAssistantStore
    from runlane.runtime.runs.manager import RunManager
    from runlane.runtime.runs.store.sql import SqlRunStore
    from runlane.runtime.threads.sql import SqlThreadStore
    from runlane.server.cluster import ClusterMember
    from runlane.server.solo import hold_solo_lock
    from runlane.server.sse import OpenStreams

    async with AsyncExitStack() as stack:
        if settings.is_sqlite:
            _sqlite_dirs(settings)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        await stack.enter_async_context(hold_solo_lock(settings, engine))
        if settings.is_sqlite:
            await upgrade_in_child(engine, settings.database_url)
        else:
            await check_schema(engine)

        runs = SqlRunStore(engine)
        stack.push_async_callback(runs.close)
        threads = SqlThreadStore(engine)
        stack.push_async_callback(threads.close)
        assistants = SqlAssistantStore(engine)
        stack.push_async_callback(assistants.close)
        events = _event_store(settings, engine)
        stack.push_async_callback(events.close)

        bridge = _bridge(settings)
        stack.push_async_callback(bridge.close)
        await bridge.start()

        checkpointer = await stack.enter_async_context(
            open_checkpointer(settings.database_url, settings.data_dir)
        )

        registry = GraphRegistry.from_config(load_config(settings.graphs_config))
        for graph_id in registry.graph_ids:
            description = registry.entry(graph_id).description
            await assistants.put(default_assistant(graph_id, description=description))

        manager = RunManager(
            runs, lease_ttl=settings.lease_ttl, eviction_delay=settings.run_eviction_delay
        )
        executor = RunExecutor(
            manager=manager,
            bridge=bridge,
            registry=registry,
            checkpointer=checkpointer,
            threads=threads,
            events=events,
        )
        stack.push_async_callback(manager.close)
        streams = OpenStreams()
        cluster = ClusterMember(
            settings=settings, manager=manager, executor=executor, streams=streams
        )
        stack.push_async_callback(cluster.close)

        services = Services(
            settings=settings,
            engine=engine,
            runs=runs,
            threads=threads,
            assistants=assistants,
            bridge=bridge,
            checkpointer=checkpointer,
            registry=registry,
            manager=manager,
            executor=executor,
            events=events,
            streams=streams,
            cluster=cluster,
        )
        await cluster.start()
        logger.info(
            "runlane %s ready: graphs %s, database %s, streams %s",
            runlane.__version__,
            ", ".join(registry.graph_ids),
            "sqlite" if settings.is_sqlite else "postgres",
            "redis" if settings.redis_url else "memory",
        )
        yield services
