"""EventStreamResponse driven as a bare ASGI app over a real MemoryStreamBridge.

The client side is simulated with ``receive``/``send`` callables, so every
behaviour (disconnect, a client that stops reading) is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import orjson
import pytest

from runlane.runtime.stream_bridge import StreamStatus
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge
from runlane.server.sse import EventStreamResponse, end_data, mode_filter

pytestmark = pytest.mark.anyio

RUN = "run-1"
END = {"run_id": RUN, "status": "success", "error": None}


class FakeClient:
    """ASGI receive/send of one HTTP client; ``leave()`` disconnects it."""

    def __init__(self, *, freeze_body: bool = False) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.gone = asyncio.Event()
        self.got_body = asyncio.Event()
        self.freeze_body = freeze_body
        self.never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and self.freeze_body:
            await self.never.wait()  # a client that stopped reading
        self.messages.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.got_body.set()

    def leave(self) -> None:
        self.gone.set()

    @property
    def start(self) -> MutableMapping[str, Any]:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


@pytest.fixture
async def bridge() -> AsyncIterator[MemoryStreamBridge]:
    async with MemoryStreamBridge(max_events_per_stream=1000) as b:
        yield b


def response(
    bridge: MemoryStreamBridge, cursor: str | None = "0", **kwargs: Any
) -> EventStreamResponse:
    options: dict[str, Any] = {"heartbeat_interval": 3600.0, "send_timeout": 5.0}
    options.update(kwargs)
    heartbeat = options["heartbeat_interval"]
    return EventStreamResponse(
        bridge.subscribe(RUN, last_event_id=cursor, heartbeat_interval=heartbeat),
        run_id=RUN,
        location=f"/threads/t/runs/{RUN}/stream",
        content_location=f"/threads/t/runs/{RUN}",
        **options,
    )


async def serve(resp: EventStreamResponse, client: FakeClient) -> None:
    """Run the response to its end; a hang fails the test instead of blocking it."""
    with anyio.fail_after(10):
        await resp({"type": "http", "method": "GET"}, client.receive, client.send)


async def test_wire_format_byte_by_byte(bridge: MemoryStreamBridge) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN, "thread_id": "t", "attempt": 1})
    await bridge.publish(RUN, "values", {"messages": ["hi\nthere"]})
    await bridge.publish(RUN, "updates|sub:1", {"a": 1})
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    client = FakeClient()
    await serve(response(bridge), client)
    assert client.start["status"] == 200
    assert client.headers == {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
        "location": f"/threads/t/runs/{RUN}/stream",
        "content-location": f"/threads/t/runs/{RUN}",
    }
    assert client.body == (
        b'event: metadata\ndata: {"run_id":"run-1","thread_id":"t","attempt":1}\nid: 1\n\n'
        b'event: values\ndata: {"messages":["hi\\nthere"]}\nid: 2\n\n'
        b'event: updates|sub:1\ndata: {"a":1}\nid: 3\n\n'
        b'event: end\ndata: {"run_id":"run-1","status":"success","error":null}\nid: 4\n\n'
    )
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_frames_already_available_go_out_in_one_send(bridge: MemoryStreamBridge) -> None:
    for i in range(100):
        await bridge.publish(RUN, "custom", i)
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    client = FakeClient()
    await serve(response(bridge), client)
    data_sends = [m for m in client.messages[1:] if m["body"]]
    assert len(data_sends) == 1
    assert data_sends[0]["body"].count(b"\nid: ") == 101


async def test_error_terminal_is_written_as_end_with_status(bridge: MemoryStreamBridge) -> None:
    await bridge.publish(RUN, "error", {"error": "ValueError", "message": "boom"})
    await bridge.publish_terminal(
        RUN, StreamStatus.ERRORED, {"run_id": RUN, "status": "error", "error": "boom"}
    )
    client = FakeClient()
    await serve(response(bridge), client)
    assert client.body == (
        b'event: error\ndata: {"error":"ValueError","message":"boom"}\nid: 1\n\n'
        b'event: end\ndata: {"run_id":"run-1","status":"error","error":"boom"}\nid: 2\n\n'
    )


async def test_terminal_without_end_data_gets_run_id_status_error(
    bridge: MemoryStreamBridge,
) -> None:
    await bridge.cancel(RUN)  # a bare ``cancel`` entry (data None)
    client = FakeClient()
    await serve(response(bridge), client)
    assert client.body == (
        b'event: end\ndata: {"run_id":"run-1","status":"interrupted","error":null}\nid: 1\n\n'
    )


def test_end_data_keeps_a_complete_payload_as_is() -> None:
    from runlane.runtime.stream_bridge import StreamEvent

    event = StreamEvent("3", "end", END, terminal=True)
    assert end_data(event, "other") is event.payload


async def test_resume_is_strictly_after_the_cursor(bridge: MemoryStreamBridge) -> None:
    for i in range(5):
        await bridge.publish(RUN, "custom", i)
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    client = FakeClient()
    await serve(response(bridge, "3"), client)
    assert client.body.startswith(b"event: custom\ndata: 3\nid: 4\n\n")
    assert client.body.count(b"event: ") == 3


async def test_gap_frame_has_no_id_and_is_followed_by_the_oldest_retained() -> None:
    async with MemoryStreamBridge(max_events_per_stream=2) as small:
        for i in range(5):
            await small.publish(RUN, "custom", i)
        await small.publish_terminal(RUN, StreamStatus.ENDED, END)
        client = FakeClient()
        await serve(response(small, "1"), client)
    assert client.body == (
        b'event: gap\ndata: {"run_id":"run-1","requested_event_id":"1",'
        b'"earliest_available_event_id":"4","latest_available_event_id":"6"}\n\n'
        b"event: custom\ndata: 3\nid: 4\n\n"
        b"event: custom\ndata: 4\nid: 5\n\n"
        b'event: end\ndata: {"run_id":"run-1","status":"success","error":null}\nid: 6\n\n'
    )


async def test_heartbeat_comment_while_silent(bridge: MemoryStreamBridge) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    client = FakeClient()
    task = asyncio.create_task(serve(response(bridge, "1", heartbeat_interval=0.01), client))
    await client.got_body.wait()
    assert client.body.startswith(b": heartbeat\n\n")
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    await task
    assert client.body.endswith(b"id: 2\n\n")


async def test_heartbeat_while_a_mode_filter_drops_everything(bridge: MemoryStreamBridge) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    client = FakeClient()
    resp = response(bridge, "1", heartbeat_interval=0.01, event_filter=mode_filter(["values"]))
    task = asyncio.create_task(serve(resp, client))
    i = 0
    while not client.got_body.is_set():  # keep the stream busy with dropped events
        await bridge.publish(RUN, "custom", i)
        i += 1
        await asyncio.sleep(0)
    assert client.body.startswith(b": heartbeat\n\n")
    assert b"custom" not in client.body
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    await task


async def test_disconnect_is_noticed_at_once_and_calls_on_disconnect(
    bridge: MemoryStreamBridge,
) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    calls: list[str] = []

    async def cancel() -> None:
        calls.append("cancel")

    client = FakeClient()
    resp = response(bridge, on_disconnect=cancel)
    task = asyncio.create_task(serve(resp, client))
    await client.got_body.wait()
    client.leave()
    await task  # returns although the stream is quiet and the heartbeat is an hour away
    assert resp.disconnected
    assert calls == ["cancel"]
    assert bridge.get_stats()["total_subscribers"] == 0


async def test_no_on_disconnect_after_the_end_was_written(bridge: MemoryStreamBridge) -> None:
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, END)
    calls: list[str] = []

    async def cancel() -> None:
        calls.append("cancel")

    client = FakeClient()
    client.leave()
    await serve(response(bridge, on_disconnect=cancel), client)
    assert calls == []


async def test_send_timeout_drops_a_client_that_stopped_reading(
    bridge: MemoryStreamBridge,
) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    calls: list[str] = []

    async def cancel() -> None:
        calls.append("cancel")

    client = FakeClient(freeze_body=True)
    resp = response(bridge, send_timeout=0.05, on_disconnect=cancel)
    await serve(resp, client)  # would hang forever without the send timeout
    assert resp.timed_out
    assert calls == ["cancel"]
    assert bridge.get_stats()["total_subscribers"] == 0


async def test_bridge_close_sends_a_retry_hint_and_ends() -> None:
    bridge = MemoryStreamBridge()
    await bridge.start()
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    client = FakeClient()
    task = asyncio.create_task(serve(response(bridge), client))
    await client.got_body.wait()
    await bridge.close()
    await task
    assert client.body.endswith(b"id: 1\n\nretry: 1000\n\n")


async def test_stream_removed_under_the_reader_ends_the_response(
    bridge: MemoryStreamBridge,
) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    client = FakeClient()
    task = asyncio.create_task(serve(response(bridge), client))
    await client.got_body.wait()
    await bridge.cleanup(RUN)
    await task
    assert client.body == b'event: metadata\ndata: {"run_id":"run-1"}\nid: 1\n\n'


async def test_primed_response_answers_a_future_cursor_with_400(
    bridge: MemoryStreamBridge,
) -> None:
    await bridge.publish(RUN, "metadata", {"run_id": RUN})
    client = FakeClient()
    await serve(response(bridge, "7", prime=True), client)
    assert client.start["status"] == 400
    body = orjson.loads(client.body)
    assert body["code"] == "bad_request"
    assert "7" in body["message"]


def test_mode_filter() -> None:
    assert mode_filter([]) is None
    assert mode_filter(None) is None
    keep = mode_filter(["values", "messages-tuple"])
    assert keep is not None
    for name in ("values", "values|sub:1", "messages", "messages|a:1|b:2", "metadata", "error",
                 "end", "gap"):
        assert keep(name), name
    for name in ("updates", "valuesx", "custom", "messages/partial"):
        assert not keep(name), name
    legacy = mode_filter(["messages"])
    assert legacy is not None
    assert legacy("messages/partial")
    assert legacy("messages/metadata")
    assert not legacy("values")
