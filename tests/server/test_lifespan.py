from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from runlane.config import ConfigurationError, Settings
from runlane.db.engine import create_engine
from runlane.graphs import default_assistant_id
from runlane.runtime.runs.manager import RESTART_ERROR
from runlane.runtime.runs.store.sql import SqlRunStore
from runlane.runtime.stream_bridge import StreamEvent
from runlane.runtime.threads.sql import SqlThreadStore
from runlane.server.app import check_schema, create_app
from runlane.server.logs import configure_logging
from runlane.server.services import Services


def _services(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


@pytest.mark.anyio
async def test_lifespan_opens_and_closes_everything(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = _services(app)
        assert await services.assistants.get(default_assistant_id("agent")) is not None
        assert await services.assistants.get(default_assistant_id("hitl")) is not None
    assert not hasattr(app.state, "services")
    assert services.bridge.get_stats()["closed"] is True
    # A second start on the same database is fine (migrations and upserts are idempotent).
    async with app.router.lifespan_context(app):
        assert len(await _services(app).assistants.search(limit=10)) == 2


@pytest.mark.anyio
async def test_orphaned_runs_are_recovered_at_start(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        threads = SqlThreadStore(engine)
        await threads.create("orphan-thread")
        await threads.set_status("orphan-thread", "busy")
        store = SqlRunStore(engine)
        await store.put(
            "orphan-run", thread_id="orphan-thread", status="running", owner_id="gone:1",
            assistant_id=default_assistant_id("agent"),
        )
    finally:
        await engine.dispose()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = _services(app)
        thread = await services.threads.get("orphan-thread")
        assert thread is not None
        assert thread["status"] == "idle"
        run = await services.manager.get("orphan-run")
        assert run is not None
        assert run.status == "error"
        assert run.error == RESTART_ERROR
        events = []
        async for item in services.bridge.subscribe("orphan-run", last_event_id="0"):
            if isinstance(item, StreamEvent) and item.id:
                events.append(item)
                if item.terminal:
                    break
        assert events[-1].terminal
        assert events[-1].data == {"run_id": "orphan-run", "status": "error",
                                   "error": RESTART_ERROR}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            text = (await client.get("/metrics")).text
        assert 'runlane_runs{status="error"} 1' in text
        assert 'runlane_runs_finished_total{status="error"}' in text


@pytest.mark.anyio
async def test_schema_check_refuses_an_unmigrated_database(
    tmp_path: Path, sqlite_url: str
) -> None:
    empty = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    migrated = create_engine(sqlite_url)
    try:
        with pytest.raises(ConfigurationError, match="runlane migrate"):
            await check_schema(empty)
        await check_schema(migrated)
    finally:
        await empty.dispose()
        await migrated.dispose()


@pytest.mark.anyio
async def test_oversized_body_on_the_app_is_413_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    big = {"thread_id": "big", "metadata": {"blob": "x" * 70_000}}
    response = await client.post("/threads", json=big)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert (await client.get("/threads/big")).status_code == 404


@pytest.mark.anyio
async def test_failed_copy_leaves_no_checkpoints(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = (await client.post("/threads", json={"metadata": {"graph_id": "hitl"}})).json()
    tid = thread["thread_id"]
    await client.post(f"/threads/{tid}/state", json={"values": {"messages": []}})
    services = _services(app)
    created: list[str] = []

    async def failing_create(thread_id: str, **kwargs: Any) -> dict[str, Any]:
        created.append(thread_id)
        raise RuntimeError("store down")

    monkeypatch.setattr(services.threads, "create", failing_create)
    response = await client.post(f"/threads/{tid}/copy")
    assert response.status_code == 500
    assert "store down" not in response.text
    assert created
    assert await services.checkpointer.aget_tuple(
        {"configurable": {"thread_id": created[0], "checkpoint_ns": ""}}
    ) is None


@pytest.mark.anyio
async def test_delete_cancels_active_runs_first(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    services = _services(app)
    record = await services.manager.create_or_reject(tid, default_assistant_id("agent"))
    assert record.is_active
    response = await client.delete(f"/threads/{tid}")
    assert response.status_code == 204
    assert record.status == "interrupted"
    assert await services.runs.get(record.run_id) is None
    assert await services.manager.list_by_thread(tid) == []


def test_json_logs_carry_extras() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("info", "json", stream=stream)
    try:
        run_id = str(uuid.uuid4())
        logging.getLogger("runlane.test").info("hello %s", "you", extra={"run_id": run_id})
        logging.getLogger("runlane.test").debug("hidden")
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("runlane.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"] == "hello you"
    assert lines[0]["level"] == "info"
    assert lines[0]["logger"] == "runlane.test"
    assert lines[0]["run_id"] == run_id
    assert lines[0]["timestamp"].endswith("+00:00")
    assert "ValueError: bad" in lines[1]["exc_info"]


@pytest.mark.anyio
async def test_freeze_heap_hides_start_up_objects_until_shutdown(settings: Settings) -> None:
    import gc

    assert gc.get_freeze_count() == 0
    async with create_app(settings).router.lifespan_context(FastAPI()):
        assert gc.get_freeze_count() == 0  # only the server process freezes
    app = create_app(settings, freeze_heap=True)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
