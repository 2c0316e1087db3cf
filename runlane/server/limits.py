"""Request body size limit: 413 for a body over ``max_body_bytes``.

The limit is enforced by :class:`~runlane.server.middleware.RequestMiddleware`
(one layer with the catch-all 500 and the request count; its docstring states
the guarantees). :class:`BodySizeLimitMiddleware` is that middleware doing
the limit alone, for apps that want nothing else.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from runlane.server.middleware import RequestMiddleware

__all__ = ["BodySizeLimitMiddleware"]


class BodySizeLimitMiddleware(RequestMiddleware):
    """Refuse HTTP request bodies larger than ``max_body_bytes`` with 413 (and nothing else)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        super().__init__(
            app, max_body_bytes=max_body_bytes, catch_errors=False, count_requests=False
        )
