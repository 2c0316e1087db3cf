"""RequestMiddleware: body limit, catch-all 500 and request count in one ASGI layer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import StreamingResponse

from runlane.exceptions import ThreadNotFoundError
from runlane.server.errors import install_error_handlers
from runlane.server.metrics import HTTP_REQUESTS
from runlane.server.middleware import RequestMiddleware

pytestmark = pytest.mark.anyio

LIMIT = 1024


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/mw/echo/{name}")
    async def echo(name: str, request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/mw/boom")
    async def boom() -> None:
        raise RuntimeError("secret token sk-123")

    @app.get("/mw/missing")
    async def missing() -> None:
        raise ThreadNotFoundError("no thread has the id 'x'")

    @app.get("/mw/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"one\n"
            raise RuntimeError("midway")

        return StreamingResponse(parts())

    install_error_handlers(app, catch_all=False)
    app.add_middleware(RequestMiddleware, max_body_bytes=LIMIT)
    return app


async def _request(method: str, url: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


def _count(method: str, route: str, status: str) -> float:
    return HTTP_REQUESTS.value(method=method, route=route, status=status)


async def test_counts_by_route_template_and_status() -> None:
    before = _count("POST", "/mw/echo/{name}", "200")
    response = await _request("POST", "/mw/echo/a", content=b"x" * 10)
    assert response.json() == {"size": 10}
    assert _count("POST", "/mw/echo/{name}", "200") == before + 1
    before_404 = _count("GET", "/mw/missing", "404")
    assert (await _request("GET", "/mw/missing")).status_code == 404
    assert _count("GET", "/mw/missing", "404") == before_404 + 1
    unmatched = _count("GET", "<unmatched>", "404")
    assert (await _request("GET", "/mw/no/such/path")).status_code == 404
    assert _count("GET", "<unmatched>", "404") == unmatched + 1


async def test_an_unhandled_error_is_a_logged_500_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = _count("GET", "/mw/boom", "500")
    with caplog.at_level(logging.ERROR):
        response = await _request("GET", "/mw/boom")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Internal server error", "message": "Internal server error",
        "code": "internal_error",
    }
    assert "sk-123" not in response.text
    assert any("sk-123" in (r.exc_text or "") for r in caplog.records)
    assert _count("GET", "/mw/boom", "500") == before + 1


async def test_an_error_after_the_response_started_propagates() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="midway"):
            await client.get("/mw/stream")


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_413_and_counted(chunked: bool) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 256

    body: object = chunks() if chunked else b"x" * (LIMIT + 1)
    before = _count("POST", "/mw/echo/{name}", "413")
    unmatched = _count("POST", "<unmatched>", "413")
    response = await _request("POST", "/mw/echo/a", content=body)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "payload_too_large"
    # A declared length is refused before routing; a streamed one after.
    counted = _count("POST", "/mw/echo/{name}", "413") - before
    counted += _count("POST", "<unmatched>", "413") - unmatched
    assert counted == 1


async def test_a_body_at_the_limit_passes() -> None:
    response = await _request("POST", "/mw/echo/a", content=b"x" * LIMIT)
    assert response.json() == {"size": LIMIT}
