"""Request body size limit: a pure ASGI middleware answering 413.

A request announcing a ``Content-Length`` over the limit is refused before
any of its body is read. A body without a length (chunked) is counted as it
streams; the moment it passes the limit the application's read fails, and
whatever the application tries to answer is replaced by the 413. Either way
the route never sees a truncated body, so nothing is half-created.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runlane.exceptions import PayloadTooLargeError
from runlane.server.errors import error_code, error_response

__all__ = ["BodySizeLimitMiddleware"]


class _BodyTooLarge(PayloadTooLargeError):
    """Raised into the application's body read; a RunlaneError, so never logged as a 500."""


class BodySizeLimitMiddleware:
    """Refuse HTTP request bodies larger than ``max_body_bytes`` with 413."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _refusal(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than {self.max_body_bytes} bytes (RUNLANE_MAX_BODY_BYTES)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(scope, receive, send)
            return

        received = 0
        too_large = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if too_large and not response_started:
                return  # the app's answer to a body it could not read is replaced
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or response_started:
                raise
        if too_large and not response_started:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = self._refusal()
        response = error_response(
            413, exc.message, error_code(exc), headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
