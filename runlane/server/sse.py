"""Server-sent events for one run's stream subscription, written for speed.

:class:`EventStreamResponse` is an ASGI response that copies a stream bridge
subscription to the client. Wire contract (DESIGN.md "HTTP"):

- Headers ``Content-Type: text/event-stream``, ``Cache-Control: no-store``,
  ``X-Accel-Buffering: no``, ``Location`` (GET it with ``Last-Event-ID`` to
  resume) and ``Content-Location`` (the run).
- Each data event is one frame ``event: <name>\\ndata: <json>\\nid: <id>\\n\\n``
  built from the bridge's pre-encoded ``payload``: nothing is JSON-encoded
  per event or per subscriber. Every data event carries its ``id:``.
- A ``StreamGap`` becomes ``event: gap`` with its four fields and no ``id:``.
- The terminal entry, whatever its name on the bridge, is written as
  ``event: end`` with its id and data ``{"run_id", "status", "error"}``;
  the response then ends.
- Silence is broken by the comment ``: heartbeat`` once per heartbeat
  interval (the bridge's heartbeat sentinel; also while a mode filter drops
  every event).
- ``END_SENTINEL`` (stream removed) ends the response; ``CANCELLED_SENTINEL``
  (the server is shutting down) writes a ``retry:`` hint first.

Delivery: a producer task turns entries into frames; the writer sends all
frames already waiting in one ``http.response.body`` message, so a burst
costs one send, while the producer pauses once :data:`HIGH_WATER` bytes wait
(a slow client costs at most one batch of memory). A third task listens for
``http.disconnect``, so a departed client is noticed at once, not at the
next write. A watchdog drops a client whose send has not finished for a
whole ``send_timeout`` (one timer per period, not one per send), so a client
that stops reading cannot pin the task.

``on_disconnect`` runs (shielded) when the client left, or was dropped for
not reading, before the terminal entry was written; the routes pass it only
for the connection that created a run with ``on_disconnect=cancel`` (or a
join that asked for ``cancel_on_disconnect``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runlane.runtime.stream_bridge import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    HEARTBEAT_SENTINEL,
    StreamEvent,
    StreamGap,
)
from runlane.server.errors import error_response

__all__ = [
    "ALWAYS_SENT",
    "HEARTBEAT_FRAME",
    "HIGH_WATER",
    "EventStreamResponse",
    "OpenStreams",
    "end_data",
    "end_frame",
    "event_frame",
    "gap_frame",
    "mode_filter",
]

logger = logging.getLogger(__name__)

HEARTBEAT_FRAME = b": heartbeat\n\n"
HIGH_WATER = 64 * 1024
"""Bytes of frames waiting for the client before the producer pauses."""

ALWAYS_SENT = frozenset({"metadata", "error", "end", "gap"})
"""Event names a stream-mode filter never drops."""

_END_STATUS = {"end": "success", "cancel": "interrupted", "error": "error", "dead_letter": "error"}

Source = AsyncIterator[StreamEvent | StreamGap]
OnDisconnect = Callable[[], Awaitable[Any]]


def event_frame(event: StreamEvent) -> bytes:
    """The SSE frame of a data event, reusing its encoded payload."""
    return b"".join(
        (
            b"event: ",
            event.event.encode(),
            b"\ndata: ",
            event.payload,
            b"\nid: ",
            event.id.encode(),
            b"\n\n",
        )
    )


def end_data(event: StreamEvent, run_id: str) -> bytes:
    """The ``end`` frame's JSON: the entry's own payload when it already has
    ``run_id``, ``status`` and ``error``, else those three derived from it."""
    data = event.data
    if isinstance(data, dict) and {"run_id", "status", "error"} <= data.keys():
        return event.payload
    status = _END_STATUS.get(event.event, "error")
    error: Any = None
    if isinstance(data, dict):
        status = data.get("status", status)
        error = data.get("error")
    elif data is not None and status == "error":
        error = data
    return orjson.dumps({"run_id": run_id, "status": status, "error": error})


def end_frame(event: StreamEvent, run_id: str) -> bytes:
    """The terminal entry as ``event: end`` with its id (none when it has none)."""
    parts = [b"event: end\ndata: ", end_data(event, run_id)]
    if event.id:
        parts += [b"\nid: ", event.id.encode()]
    parts.append(b"\n\n")
    return b"".join(parts)


def gap_frame(gap: StreamGap) -> bytes:
    """``event: gap`` with the gap's fields and no ``id:`` (the cursor stays put)."""
    data = orjson.dumps(
        {
            "run_id": gap.run_id,
            "requested_event_id": gap.requested_event_id,
            "earliest_available_event_id": gap.earliest_available_event_id,
            "latest_available_event_id": gap.latest_available_event_id,
        }
    )
    return b"event: gap\ndata: " + data + b"\n\n"


def mode_filter(modes: Iterable[str] | None) -> Callable[[str], bool] | None:
    """A predicate on event names keeping the given stream modes, or None for all.

    Kept: :data:`ALWAYS_SENT`, ``mode`` and ``mode|<namespace>...``; the mode
    ``messages-tuple`` keeps ``messages`` events, the legacy ``messages``
    keeps ``messages/partial``, ``messages/complete`` and ``messages/metadata``.
    """
    if not modes:
        return None
    allowed = set(ALWAYS_SENT)
    for mode in modes:
        if mode == "messages-tuple":
            allowed.add("messages")
        elif mode == "messages":
            allowed.update(("messages/partial", "messages/complete", "messages/metadata"))
        else:
            allowed.add(mode)

    def keep(name: str) -> bool:
        return name in allowed or name.split("|", 1)[0] in allowed

    return keep


class OpenStreams:
    """The SSE responses this process is sending, so a shutdown can hang them all up."""

    def __init__(self) -> None:
        self._streams: set[EventStreamResponse] = set()

    def add(self, stream: EventStreamResponse) -> None:
        self._streams.add(stream)

    def discard(self, stream: EventStreamResponse) -> None:
        self._streams.discard(stream)

    def __len__(self) -> int:
        return len(self._streams)

    def hang_up_all(self) -> int:
        """:meth:`EventStreamResponse.hang_up` every open stream; how many there were."""
        streams = list(self._streams)
        for stream in streams:
            stream.hang_up()
        return len(streams)


class EventStreamResponse(Response):
    """The SSE response for one subscription; see the module docstring.

    ``prime``: wait for the subscription's first entry before the status line,
    so a cursor the bridge rejects (``ValueError``) is answered with a JSON
    400 instead of a stream. Routes that validated the cursor already pass
    False and the headers go out at once.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        source: Source,
        *,
        run_id: str,
        location: str,
        content_location: str,
        heartbeat_interval: float,
        send_timeout: float,
        on_disconnect: OnDisconnect | None = None,
        event_filter: Callable[[str], bool] | None = None,
        prime: bool = False,
        retry_ms: int = 1000,
        headers: Mapping[str, str] | None = None,
        streams: OpenStreams | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.source = source
        self.run_id = run_id
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.on_disconnect = on_disconnect
        self.event_filter = event_filter
        self.prime = prime
        self.retry_ms = retry_ms
        self.stream_headers = {
            "content-type": "text/event-stream",
            "cache-control": "no-store",
            "x-accel-buffering": "no",
            "location": location,
            "content-location": content_location,
            **(headers or {}),
        }
        self.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in self.stream_headers.items()
        ]
        # Delivery state, shared by the producer, the writer and the listener.
        self.completed = False  # the terminal entry was queued
        self.disconnected = False
        self.timed_out = False
        self._sending = False
        self._sends = 0
        self.cursor_error: ValueError | None = None
        self._frames: list[bytes] = []
        self._size = 0
        self._done = False
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._streams = streams
        self._producer: anyio.CancelScope | None = None

    # -- producer ---------------------------------------------------------------

    def _push(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._size += len(frame)
        self._ready.set()

    async def _produce(self) -> None:
        source = self.source
        keep = self.event_filter
        clock = anyio.current_time
        last_frame = clock()
        try:
            while True:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    break
                except ValueError as exc:  # the bridge refused the cursor
                    self.cursor_error = exc
                    break
                if isinstance(item, StreamGap):
                    self._push(gap_frame(item))
                elif item.terminal:
                    self._push(end_frame(item, self.run_id))
                    self.completed = True
                    break
                elif not item.id:
                    if item is HEARTBEAT_SENTINEL:
                        self._push(HEARTBEAT_FRAME)
                    elif item is CANCELLED_SENTINEL:
                        self._push(b"retry: %d\n\n" % self.retry_ms)
                        break
                    elif item is END_SENTINEL:
                        break
                    else:  # an entry without an id (a synthetic end is terminal)
                        continue
                elif keep is None:
                    self._push(event_frame(item))
                    if self._size >= HIGH_WATER:
                        await self._wait_for_space()
                    continue
                elif keep(item.event):
                    self._push(event_frame(item))
                elif clock() - last_frame >= self.heartbeat_interval:
                    self._push(HEARTBEAT_FRAME)
                else:
                    continue
                if keep is not None:
                    last_frame = clock()
                if self._size >= HIGH_WATER:
                    await self._wait_for_space()
        finally:
            self._done = True
            self._ready.set()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _produce_until_hang_up(self) -> None:
        with anyio.CancelScope() as self._producer:
            await self._produce()

    def hang_up(self) -> None:
        """Close the stream with a ``retry:`` hint, so the client reconnects elsewhere.

        For a process shutting down; a stream that already queued its
        terminal entry is left to finish.
        """
        if self.completed or self._done:
            return
        self._push(b"retry: %d\n\n" % self.retry_ms)
        if self._producer is not None:
            self._producer.cancel()

    async def _wait_for_space(self) -> None:
        self._space.clear()
        await self._space.wait()

    # -- writer -----------------------------------------------------------------

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        self._sending = True
        await send(message)
        self._sending = False
        self._sends += 1

    async def _watch_sends(self, scope: anyio.CancelScope) -> None:
        """Drop a client whose one send has not finished for a whole ``send_timeout``.

        One timer per period instead of one per send: a stuck send is noticed
        within one to two ``send_timeout`` periods.
        """
        while True:
            seen = self._sends
            await anyio.sleep(self.send_timeout)
            if self._sending and self._sends == seen:
                self.timed_out = True
                logger.info("run %s: SSE client stopped reading; dropped", self.run_id)
                scope.cancel()
                return

    async def _write(self, send: Send) -> None:
        frames = self._frames
        while True:
            if not frames:
                if self._done:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            frames.clear()
            self._size = 0
            self._space.set()
            await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": True})

    async def _listen(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                scope.cancel()
                return

    # -- ASGI -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._streams is not None:
            self._streams.add(self)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen, receive, tg.cancel_scope)
                tg.start_soon(self._watch_sends, tg.cancel_scope)
                tg.start_soon(self._produce_until_hang_up)
                await self._respond(scope, receive, send)
                tg.cancel_scope.cancel()
        finally:
            if self._streams is not None:
                self._streams.discard(self)
            if (self.disconnected or self.timed_out) and not self.completed:
                await self._client_left()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prime:
            while not self._frames and not self._done:
                self._ready.clear()
                await self._ready.wait()
            if self.cursor_error is not None:
                response = error_response(400, str(self.cursor_error), "bad_request")
                await response(scope, receive, send)
                self.completed = True  # nothing was streamed; nothing to cancel
                return
        await self._send(
            send, {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        )
        await self._write(send)
        await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _client_left(self) -> None:
        if self.on_disconnect is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.on_disconnect()
            except Exception:
                logger.exception("run %s: on_disconnect handler failed", self.run_id)
