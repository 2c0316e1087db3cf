from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from runlane.server.errors import install_error_handlers
from runlane.server.limits import BodySizeLimitMiddleware

LIMIT = 1024


def _app(seen: list[int]) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.append(len(body))
        return {"size": len(body)}

    @app.post("/json")
    async def as_json(payload: dict[str, str]) -> dict[str, int]:
        seen.append(len(payload))
        return {"keys": len(payload)}

    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=LIMIT)
    return app


async def _post(app: FastAPI, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post(path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_body_at_the_limit_passes() -> None:
    seen: list[int] = []
    response = await _post(_app(seen), "/echo", content=b"x" * LIMIT)
    assert response.status_code == 200
    assert seen == [LIMIT]


@pytest.mark.anyio
async def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    seen: list[int] = []
    response = await _post(_app(seen), "/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert str(LIMIT) in response.json()["message"]
    assert seen == []


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/echo", "/json"])
async def test_streamed_body_over_the_limit_is_413(path: str) -> None:
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 256  # 2 KiB in all, no Content-Length

    response = await _post(_app(seen), path, content=chunks())
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert seen == []


@pytest.mark.anyio
async def test_streamed_body_under_the_limit_passes() -> None:
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * 256

    response = await _post(_app(seen), "/echo", content=chunks())
    assert response.status_code == 200
    assert seen == [768]
