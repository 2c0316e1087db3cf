"""Disconnects, heartbeats and keep-alives, driven through the ASGI app directly
so the test decides exactly when the client goes away."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from runlane.server.app import create_app
from tests.server import runs_graphs, runs_support
from tests.server.runs_support import RawExchange, data_frames, make_settings

pytestmark = pytest.mark.anyio

settings = runs_support.settings
_gates = runs_support._gates


async def new_thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/threads", json={})).json()["thread_id"])


async def run_status(client: httpx.AsyncClient, tid: str, rid: str) -> str:
    return str((await client.get(f"/threads/{tid}/runs/{rid}")).json()["status"])


def gate_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"assistant_id": "gate", "input": {"name": name}, "stream_mode": "values", **extra}


async def open_stream(app: FastAPI, tid: str, name: str, **extra: Any) -> tuple[RawExchange, str]:
    exchange = RawExchange(app, "POST", f"/threads/{tid}/runs/stream", gate_body(name, **extra))
    exchange.start()
    await runs_graphs.ENTERED[name].wait()
    await exchange.wait_for(lambda e: b"event: metadata" in e.body)
    rid = data_frames(exchange.body)[0].data["run_id"]
    return exchange, rid


async def test_on_disconnect_cancel_cancels_the_run(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tid = await new_thread(client)
    exchange, rid = await open_stream(app, tid, "a", on_disconnect="cancel")
    assert exchange.status == 200
    assert await run_status(client, tid, rid) == "running"
    exchange.leave()
    await exchange.finished()
    assert await run_status(client, tid, rid) == "interrupted"


async def test_default_on_disconnect_continues(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    exchange, rid = await open_stream(app, tid, "a")
    exchange.leave()
    await exchange.finished()
    assert await run_status(client, tid, rid) == "running"
    runs_graphs.GATES["a"].set()
    joined = await client.get(f"/threads/{tid}/runs/{rid}/join")
    assert joined.json()["log"] == ["a"]
    assert await run_status(client, tid, rid) == "success"


async def test_a_joiner_leaving_does_not_cancel(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    creator, rid = await open_stream(app, tid, "a", on_disconnect="cancel")
    location = f"/threads/{tid}/runs/{rid}/stream"
    joiner = RawExchange(app, "GET", location, headers={"Last-Event-ID": "0"}).start()
    await joiner.wait_for(lambda e: b"event: metadata" in e.body)
    joiner.leave()
    await joiner.finished()
    assert await run_status(client, tid, rid) == "running"
    # The SDK's automatic reconnect is a GET of Location too: it never cancels.
    creator.leave()
    await creator.finished()
    assert await run_status(client, tid, rid) == "interrupted"


async def test_join_with_cancel_on_disconnect(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    creator, rid = await open_stream(app, tid, "a")
    joiner = RawExchange(app, "GET", f"/threads/{tid}/runs/{rid}/stream",
                         headers={"Last-Event-ID": "0"}, query="cancel_on_disconnect=true").start()
    await joiner.wait_for(lambda e: b"event: metadata" in e.body)
    joiner.leave()
    await joiner.finished()
    assert await run_status(client, tid, rid) == "interrupted"
    await creator.finished()  # the creator's stream ends with the run
    assert data_frames(creator.body)[-1].data["status"] == "interrupted"


async def test_wait_on_disconnect_cancel(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    exchange = RawExchange(app, "POST", f"/threads/{tid}/runs/wait",
                           gate_body("a", on_disconnect="cancel")).start()
    await runs_graphs.ENTERED["a"].wait()
    await exchange.wait_for(lambda e: e.status is not None)
    rid = dict(exchange.messages[0]["headers"])[b"content-location"].decode().rsplit("/", 1)[1]
    exchange.leave()
    await exchange.finished()
    assert await run_status(client, tid, rid) == "interrupted"


@pytest.fixture
async def quick(
    tmp_path: Path, sqlite_url: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app whose heartbeat interval is tiny."""
    app = create_app(make_settings(tmp_path, sqlite_url, heartbeat_interval=0.01))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


async def test_sse_heartbeat_while_the_run_is_quiet(
    quick: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = quick
    tid = await new_thread(client)
    exchange, _ = await open_stream(app, tid, "a")
    await exchange.wait_for(lambda e: b": heartbeat\n\n" in e.body)
    runs_graphs.GATES["a"].set()
    await exchange.finished()
    frames = data_frames(exchange.body)
    assert frames[-1].event == "end"
    assert frames[-1].data["status"] == "success"


async def test_wait_sends_whitespace_keepalives(quick: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = quick
    tid = await new_thread(client)
    exchange = RawExchange(app, "POST", f"/threads/{tid}/runs/wait", gate_body("a")).start()
    await runs_graphs.ENTERED["a"].wait()
    await exchange.wait_for(lambda e: e.body.startswith(b"\n"))
    runs_graphs.GATES["a"].set()
    await exchange.finished()
    headers = dict(exchange.messages[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"location"].endswith(b"/join")
    assert orjson.loads(exchange.body) == {"name": "a", "log": ["a"]}
