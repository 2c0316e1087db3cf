"""A TCP proxy for tests that cuts a streaming HTTP response right after its k-th SSE event.

It sits between a client and the server on 127.0.0.1. The first connection it
accepts is cut: every byte up to and including the blank line that ends the
k-th SSE event (a frame with at least one field; heartbeat comments do not
count) is forwarded, then both sides are closed, so the client sees a body
that stops mid-response. Later connections (the client's reconnects) pass
through untouched. HTTP/1.1 chunked bodies are decoded to find frame ends;
the cut offset is in raw bytes, so it may fall inside a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from types import TracebackType

_COMMENT_LINE = re.compile(rb"(?:^|\n):")


class FrameCutter:
    """Finds, in a raw HTTP/1.1 response byte stream, the offset just after the k-th SSE event.

    ``k == 0`` cuts right after the response head (for JSON bodies such as ``/wait``).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self._head = b""
        self._in_body = False
        self._chunked = False
        self._state = "size"
        self._size_line = b""
        self._chunk_left = 0
        self._crlf_left = 0
        self._line = b""
        self._frame_has_field = False

    def feed(self, data: bytes) -> int | None:
        """Offset in ``data`` just after the k-th event ends, or None if not in ``data``."""
        pos = 0
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return None
            headers = self._head[:end].decode("latin-1").lower()
            self._chunked = "transfer-encoding: chunked" in headers
            self._in_body = True
            pos = len(data) - (len(self._head) - (end + 4))
            self._head = b""
            if self.k == 0:  # cut right after the response head, before any body byte
                return pos
        while pos < len(data):
            if not self._chunked:
                return self._scan(data, pos, len(data))
            if self._state == "size":
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._size_line += data[pos:]
                    return None
                self._size_line += data[pos:newline]
                pos = newline + 1
                size = int(self._size_line.strip().split(b";")[0], 16)
                self._size_line = b""
                if size == 0:
                    self._state = "done"
                    return None
                self._chunk_left = size
                self._state = "data"
            elif self._state == "data":
                end = min(len(data), pos + self._chunk_left)
                cut = self._scan(data, pos, end)
                if cut is not None:
                    return cut
                self._chunk_left -= end - pos
                pos = end
                if self._chunk_left == 0:
                    self._state = "crlf"
                    self._crlf_left = 2
            elif self._state == "crlf":
                take = min(self._crlf_left, len(data) - pos)
                self._crlf_left -= take
                pos += take
                if self._crlf_left == 0:
                    self._state = "size"
            else:
                return None
        return None

    def _scan(self, data: bytes, start: int, end: int) -> int | None:
        index = start
        while index < end:
            newline = data.find(b"\n", index, end)
            if newline < 0:
                self._line += data[index:end]
                return None
            line = (self._line + data[index:newline]).rstrip(b"\r")
            self._line = b""
            index = newline + 1
            if not line:
                if self._frame_has_field:
                    self.seen += 1
                    self._frame_has_field = False
                    if self.seen == self.k:
                        return index
            elif not line.startswith(b":"):
                self._frame_has_field = True
        return None


class CuttingProxy:
    """``async with CuttingProxy(port, k) as proxy``: clients use ``proxy.url``.

    ``cut_after=None`` never cuts (a plain pass-through). ``comment_seen`` is set
    once an SSE comment line (a heartbeat) passes from the server to the client.
    """

    def __init__(self, upstream_port: int, cut_after: int | None) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.connections = 0
        self.cut_done = False
        self.comment_seen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        cutter = FrameCutter(self.cut_after) if index == 0 and self.cut_after is not None else None
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            upstream = up_writer
            to_server = asyncio.ensure_future(self._pipe(reader, upstream, None, downstream=False))
            to_client = asyncio.ensure_future(
                self._pipe(up_reader, writer, cutter, downstream=True)
            )
            try:
                await asyncio.wait({to_server, to_client}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (to_server, to_client):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
        except ConnectionError:
            pass
        finally:
            for side in (writer, up_writer):
                if side is not None:
                    side.close()
                    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                        await side.wait_closed()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        cutter: FrameCutter | None,
        *,
        downstream: bool,
    ) -> None:
        while True:
            data = await source.read(65536)
            if not data:
                return
            if downstream and _COMMENT_LINE.search(data):
                self.comment_seen.set()
            cut = cutter.feed(data) if cutter is not None else None
            if cut is not None:
                sink.write(data[:cut])
                await sink.drain()
                self.cut_done = True
                return
            sink.write(data)
            await sink.drain()
