"""One pure ASGI middleware for every HTTP request: body limit, catch-all 500, request count.

:class:`RequestMiddleware` does in one layer (one ``send`` wrapper, one
``receive`` wrapper) what three layers did before, because every SSE frame
passes through each layer's ``send``:

- **Body size limit** (``max_body_bytes``; None: no limit). A request
  announcing a ``Content-Length`` over the limit is answered 413 before any
  of its body is read. A body without a length (chunked) is counted as it
  streams; the moment it passes the limit the application's read fails
  (:class:`~runlane.exceptions.PayloadTooLargeError`), and whatever the
  application tries to answer is replaced by the 413. Either way the route
  never sees a truncated body, so nothing is half-created. The 413 closes
  the connection.
- **Catch-all** (``catch_errors``): an exception that escapes the
  application becomes a 500 JSON error (:func:`~runlane.server.errors.error_response`,
  message "Internal server error"), logged with its traceback; the client
  never reads the exception's text. If the response had already started (a
  stream failing midway) the exception is logged and propagates, so the
  server closes the connection.
- **Request count** (``count_requests``): every HTTP request is counted in
  :data:`~runlane.server.metrics.HTTP_REQUESTS` by method, route *template*
  (``<unmatched>`` for a path no route matched, so arbitrary URLs cannot
  grow the label set) and the status sent (500 when none was).

Other ASGI traffic (lifespan, websockets) passes through untouched.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runlane.exceptions import PayloadTooLargeError
from runlane.server.errors import error_code, error_response
from runlane.server.metrics import HTTP_REQUESTS

__all__ = ["RequestMiddleware", "content_length"]

logger = logging.getLogger(__name__)


class _BodyTooLarge(PayloadTooLargeError):
    """Raised into the application's body read; a RunlaneError, so never logged as a 500."""


def content_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None (absent or malformed)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestMiddleware:
    """Body limit, catch-all 500 and request count in one layer; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int | None = None,
        catch_errors: bool = True,
        count_requests: bool = True,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.catch_errors = catch_errors
        self.count_requests = count_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        status = 0  # the status sent; 0 until the response started
        too_large = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if not status:
                if too_large:
                    return  # the app's answer to a body it could not read is replaced
                if message["type"] == "http.response.start":
                    status = int(message["status"])
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            try:
                declared = content_length(scope) if limit is not None else None
                if declared is not None and limit is not None and declared > limit:
                    too_large = True
                else:
                    app_receive = limited_receive if limit is not None else receive
                    await self.app(scope, app_receive, send_wrapper)
            except Exception:
                if not too_large or status:
                    if not self.catch_errors:
                        raise
                    method, path = scope.get("method"), scope.get("path")
                    logger.exception("unhandled error in %s %s", method, path)
                    if status:
                        raise
                    status = 500
                    response = error_response(500, "Internal server error", "internal_error")
                    await response(scope, receive, send)
            if too_large and not status:
                status = 413
                await self._refuse(scope, receive, send)
        finally:
            if self.count_requests:
                route = getattr(scope.get("route"), "path", None) or "<unmatched>"
                method = str(scope.get("method", ""))
                HTTP_REQUESTS.inc(method=method, route=route, status=str(status or 500))

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = PayloadTooLargeError(
            f"The request body is larger than {self.max_body_bytes} bytes (RUNLANE_MAX_BODY_BYTES)."
        )
        response = error_response(
            413, exc.message, error_code(exc), headers={"Connection": "close"}
        )
        await response(scope, receive, send)
