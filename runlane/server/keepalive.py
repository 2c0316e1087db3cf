"""A JSON response that keeps the connection alive while its body is computed.

``/runs/wait``, ``/join`` and ``cancel?wait=1`` may wait for a long run; the
SDK's read timeout is 300 s and proxies drop idle connections sooner. So the
status line and headers go out at once, then one ``\\n`` per heartbeat
interval while the body is computed, then the JSON body (JSON parsers skip
leading whitespace). As with the SSE response, a disconnect is noticed at
once (``http.disconnect`` is awaited concurrently), every send runs under
``send_timeout``, and ``on_disconnect`` runs (shielded) when the client left
before the body was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["KeepAliveJSONResponse"]

logger = logging.getLogger(__name__)


class KeepAliveJSONResponse(Response):
    """200 ``application/json`` whose body is ``await compute()``, preceded by
    whitespace keep-alives. If ``compute`` raises after the headers went
    out, the body is ``{"__error__": {"error": "InternalServerError", ...}}``
    (the status line cannot change any more; the exception is logged)."""

    media_type = "application/json"

    def __init__(
        self,
        compute: Callable[[], Awaitable[Any]],
        *,
        heartbeat_interval: float,
        send_timeout: float,
        headers: Mapping[str, str] | None = None,
        on_disconnect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.compute = compute
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.on_disconnect = on_disconnect
        all_headers = {"content-type": "application/json", **(headers or {})}
        self.raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in all_headers.items()
        ]
        self.completed = False
        self.disconnected = False
        self.timed_out = False

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        with anyio.fail_after(self.send_timeout):
            await send(message)

    async def _listen(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            if (await receive())["type"] == "http.disconnect":
                self.disconnected = True
                scope.cancel()
                return

    async def _body(self, task: asyncio.Task[Any]) -> bytes:
        try:
            result = task.result()
        except Exception:
            logger.exception("computing a keep-alive JSON body failed")
            result = {
                "__error__": {"error": "InternalServerError", "message": "Internal server error"}
            }
        return orjson.dumps(result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(self.compute())
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen, receive, tg.cancel_scope)
                try:
                    await self._respond(send, task)
                except TimeoutError:
                    self.timed_out = True
                tg.cancel_scope.cancel()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            left = self.disconnected or self.timed_out
            if left and not self.completed and self.on_disconnect is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.on_disconnect()
                    except Exception:
                        logger.exception("on_disconnect handler failed")

    async def _respond(self, send: Send, task: asyncio.Task[Any]) -> None:
        await self._send(
            send, {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        )
        while True:
            done, _ = await asyncio.wait((task,), timeout=self.heartbeat_interval)
            if done:
                break
            await self._send(send, {"type": "http.response.body", "body": b"\n", "more_body": True})
        body = await self._body(task)
        self.completed = True
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": False})
