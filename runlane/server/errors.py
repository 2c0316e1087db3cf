"""How errors become HTTP responses.

Every error response is JSON ``{"detail": msg, "message": msg, "code": code}``
(the SDK reads ``message`` or ``detail``; ``code`` is snake_case and stable).

=======================================  ======  ================================
raised                                   status  code
=======================================  ======  ================================
ThreadExistsError, ConflictError         409     ``thread_exists`` / ``conflict``
*NotFoundError (run, thread, assistant,  404     e.g. ``thread_not_found``
graph)
InvalidInputError and subclasses         422     e.g. ``invalid_thread_id``
BadRequestError                          400     ``bad_request``
PayloadTooLargeError                     413     ``payload_too_large``
StoreUnavailableError                    503     ``store_unavailable``
ShuttingDownError                        503     ``shutting_down``
any other RunlaneError                   400     from the class name
RequestValidationError (bad body)        422     ``validation_error``, names fields
HTTPException                            its     ``http_<status>``
anything else                            500     ``internal_error``
=======================================  ======  ================================

The table is keyed by class *name* along the exception's MRO, so an error
class defined in another package maps without this module importing it.
A 500 never carries the exception's text: it is logged with its traceback
and the client reads only "Internal server error" (the catch-all is
:class:`~runlane.server.middleware.RequestMiddleware`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from runlane.exceptions import RunlaneError

__all__ = [
    "STATUS_BY_ERROR",
    "error_code",
    "error_response",
    "install_error_handlers",
    "status_for",
    "validation_message",
]

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[str, int] = {
    "ThreadExistsError": 409,
    "AssistantExistsError": 409,
    "ConflictError": 409,
    "RunNotFoundError": 404,
    "ThreadNotFoundError": 404,
    "AssistantNotFoundError": 404,
    "GraphNotFoundError": 404,
    "CheckpointNotFoundError": 404,
    "BadRequestError": 400,
    "PayloadTooLargeError": 413,
    "InvalidInputError": 422,
    "StoreUnavailableError": 503,
    "ShuttingDownError": 503,
    "RunlaneError": 400,
}
"""HTTP status by exception class name; the first name found along the MRO wins."""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def status_for(exc: RunlaneError) -> int:
    """The HTTP status for ``exc`` per :data:`STATUS_BY_ERROR`."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls.__name__)
        if status is not None:
            return status
    return 400


def error_code(exc: BaseException) -> str:
    """``ThreadNotFoundError`` -> ``thread_not_found``."""
    name = type(exc).__name__.removesuffix("Error") or "error"
    return _CAMEL.sub("_", name).lower()


def error_response(
    status_code: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every runlane error response uses."""
    body = {"detail": message, "message": message, "code": code}
    return JSONResponse(body, status_code=status_code, headers=headers)


def validation_message(errors: Sequence[Any]) -> str:
    """One line naming each invalid field: ``Invalid request: body.limit: ...; ...``."""
    parts = []
    for error in errors:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid value')}")
    return "Invalid request: " + "; ".join(parts) if parts else "Invalid request"


async def _runlane_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RunlaneError)
    status = status_for(exc)
    if status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, exc.message, error_code(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_message(exc.errors()), "validation_error")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, message, f"http_{exc.status_code}", exc.headers)


def install_error_handlers(app: FastAPI, *, catch_all: bool = True) -> None:
    """Register the handlers above on ``app``.

    ``catch_all``: also add :class:`~runlane.server.middleware.RequestMiddleware`
    as the catch-all 500 (nothing else); pass False when the app adds that
    middleware itself, as :func:`runlane.server.app.create_app` does.
    """
    app.add_exception_handler(RunlaneError, _runlane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if catch_all:
        from runlane.server.middleware import RequestMiddleware

        app.add_middleware(RequestMiddleware, count_requests=False)
