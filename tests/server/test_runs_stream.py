"""SSE over HTTP: create-stream, join_stream, resume, gaps, filters, stateless Location."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from runlane.config import Settings
from tests.server import runs_support
from tests.server.runs_support import data_frames, make_settings, parse_sse

pytestmark = pytest.mark.anyio

settings = runs_support.settings
_gates = runs_support._gates


async def new_thread(client: httpx.AsyncClient) -> str:
    response = await client.post("/threads", json={})
    assert response.status_code == 200, response.text
    return str(response.json()["thread_id"])


async def run_stream(
    client: httpx.AsyncClient, tid: str, assistant: str = "emit", **body: Any
) -> httpx.Response:
    payload = {"assistant_id": assistant, "stream_mode": "custom", "stream_subgraphs": False,
               "stream_resumable": False, **body}
    response = await client.post(f"/threads/{tid}/runs/stream", json=payload)
    assert response.status_code == 200, response.text
    return response


async def settle(app: FastAPI, run_id: str) -> None:
    """Wait until the run's task (finalisation included) is over."""
    record = await app.state.services.manager.get(run_id)
    if record is not None and record.task is not None:
        await record.task


async def test_stream_wire_format(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    response = await run_stream(client, tid, input={"n": 2})
    frames = data_frames(response.content)
    rid = frames[0].data["run_id"]
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["location"] == f"/threads/{tid}/runs/{rid}/stream"
    assert response.headers["content-location"] == f"/threads/{tid}/runs/{rid}"
    assert frames[0].event == "metadata"
    assert frames[0].id == "1"
    assert frames[0].data == {"run_id": rid, "thread_id": tid, "attempt": 1}
    assert response.content.endswith(
        b'event: custom\ndata: {"i":0}\nid: 2\n\n'
        b'event: custom\ndata: {"i":1}\nid: 3\n\n'
        b'event: end\ndata: ' + orjson.dumps({"run_id": rid, "status": "success", "error": None})
        + b"\nid: 4\n\n"
    )
    assert [f.event for f in frames] == ["metadata", "custom", "custom", "end"]


async def test_error_run_ends_with_error_then_end(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    frames = data_frames((await run_stream(client, tid, "fail", input={"n": 1})).content)
    assert [f.event for f in frames] == ["metadata", "error", "end"]
    assert frames[1].data["error"] == "ValueError"
    assert "boom" in frames[1].data["message"]
    assert frames[2].data["status"] == "error"
    assert all(f.id for f in frames)
    assert [int(f.id or 0) for f in frames] == [1, 2, 3]


async def test_resume_after_every_event_is_exactly_once(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 8})
    full = data_frames(first.content)
    location = first.headers["location"]
    assert len(full) == 10
    for k, cut in enumerate(full[:-1]):
        resumed = await client.get(location, headers={"Last-Event-ID": str(cut.id)})
        assert resumed.status_code == 200
        assert data_frames(resumed.content) == full[k + 1 :], f"cut after event {cut.id}"


async def test_query_cursor_and_replay_from_start(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 3})
    full = data_frames(first.content)
    location = first.headers["location"]
    by_query = await client.get(location, params={"last_event_id": "2"})
    assert data_frames(by_query.content) == full[2:]
    header_wins = await client.get(
        location, params={"last_event_id": "4"}, headers={"Last-Event-ID": "2"}
    )
    assert data_frames(header_wins.content) == full[2:]
    for start in ("-1", "-", "0"):
        replay = await client.get(location, headers={"Last-Event-ID": start})
        assert data_frames(replay.content) == full, start


@pytest.mark.parametrize("cursor", ["abc", "1.5", "01", "99"])
async def test_bad_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 1})
    response = await client.get(first.headers["location"], headers={"Last-Event-ID": cursor})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert cursor.lstrip("0") in response.json()["message"] or cursor == "01"


async def test_join_of_finished_run_whose_stream_is_gone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 1})
    rid = data_frames(first.content)[0].data["run_id"]
    await settle(app, rid)
    await app.state.services.bridge.cleanup(rid)
    response = await client.get(f"/threads/{tid}/runs/{rid}/stream")
    assert response.status_code == 200
    assert response.content == (
        b"event: end\ndata: "
        + orjson.dumps({"run_id": rid, "status": "success", "error": None}) + b"\n\n"
    )


async def test_join_without_cursor_is_live_from_now(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A cursorless join of a finished run gets only the terminal entry, with its real id."""
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 2})
    full = data_frames(first.content)
    response = await client.get(first.headers["location"])
    assert data_frames(response.content) == full[-1:]
    assert full[-1].id == "4"


async def test_gap_frame_has_no_id(tmp_path: Any, sqlite_url: str) -> None:
    from runlane.server.app import create_app

    small = make_settings(tmp_path, sqlite_url, stream_max_events=2)
    app = create_app(small)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tid = await new_thread(client)
            first = await run_stream(client, tid, input={"n": 6})
            rid = first.headers["content-location"].rsplit("/", 1)[1]
            joined = await client.get(first.headers["location"], headers={"Last-Event-ID": "1"})
    frames = parse_sse(joined.content)
    assert frames[0].event == "gap"
    assert frames[0].id is None
    assert frames[0].data == {
        "run_id": rid, "requested_event_id": "1",
        "earliest_available_event_id": "6", "latest_available_event_id": "8",
    }
    assert [(f.event, f.id) for f in frames[1:]] == [("custom", "6"), ("custom", "7"), ("end", "8")]
    assert joined.content.startswith(b"event: gap\ndata: {")


async def test_join_stream_mode_filter(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    first = await run_stream(client, tid, input={"n": 2}, stream_mode=["custom", "values"])
    full = data_frames(first.content)
    assert {f.event for f in full} == {"metadata", "custom", "values", "end"}
    location = first.headers["location"]
    queries: list[list[tuple[str, str | int | float | bool | None]]] = [
        [("stream_mode", "custom")],
        [("stream_mode", "custom"), ("stream_mode", "updates")],
        [("stream_mode", "custom,updates")],
        [("stream_mode", '["custom"]')],
    ]
    for query in queries:
        joined = await client.get(location, params=query, headers={"Last-Event-ID": "0"})
        assert data_frames(joined.content) == [f for f in full if f.event != "values"], query
    everything = await client.get(
        location, params={"stream_mode": ""}, headers={"Last-Event-ID": "0"}
    )
    assert data_frames(everything.content) == full
    bad = await client.get(location, params={"stream_mode": "tools"})
    assert bad.status_code == 422
    assert "tools" in bad.json()["message"]


async def test_stateless_stream_location_resumes_and_thread_is_deleted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/runs/stream", json={"assistant_id": "emit", "input": {"n": 2}, "stream_mode": "custom"}
    )
    assert response.status_code == 200
    full = data_frames(response.content)
    rid, tid = full[0].data["run_id"], full[0].data["thread_id"]
    assert response.headers["location"] == f"/runs/{rid}/stream"
    assert response.headers["content-location"] == f"/runs/{rid}"
    await settle(app, rid)
    assert (await client.get(f"/threads/{tid}")).status_code == 404
    resumed = await client.get(response.headers["location"], headers={"Last-Event-ID": "1"})
    assert resumed.status_code == 200
    assert data_frames(resumed.content) == full[1:]


async def test_stateless_keep_leaves_the_thread(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/runs/stream",
        json={"assistant_id": "emit", "input": {"n": 1}, "on_completion": "keep"},
    )
    frames = data_frames(response.content)
    await settle(app, frames[0].data["run_id"])
    thread = await client.get(f"/threads/{frames[0].data['thread_id']}")
    assert thread.status_code == 200


async def test_stream_unknown_run_is_404(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    missing = str(uuid.uuid4())
    assert (await client.get(f"/threads/{tid}/runs/{missing}/stream")).status_code == 404
    assert (await client.get(f"/runs/{missing}/stream")).status_code == 404


def test_settings_fixture_serves_the_test_graphs(settings: Settings) -> None:
    assert settings.config is not None
    assert "tests.server.runs_graphs:emit" in settings.config.read_text()
