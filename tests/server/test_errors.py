from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from runlane.exceptions import (
    BadRequestError,
    ConflictError,
    InvalidThreadIdError,
    PayloadTooLargeError,
    RunlaneError,
    RunNotFoundError,
    StoreUnavailableError,
    ThreadExistsError,
    ThreadNotFoundError,
)
from runlane.graphs import AssistantNotFoundError, GraphNotFoundError
from runlane.server.errors import error_code, install_error_handlers, status_for


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConflictError(), 409, "conflict"),
        (ThreadExistsError(), 409, "thread_exists"),
        (RunNotFoundError(), 404, "run_not_found"),
        (ThreadNotFoundError(), 404, "thread_not_found"),
        (AssistantNotFoundError(), 404, "assistant_not_found"),
        (GraphNotFoundError(), 404, "graph_not_found"),
        (InvalidThreadIdError(), 422, "invalid_thread_id"),
        (BadRequestError(), 400, "bad_request"),
        (PayloadTooLargeError(), 413, "payload_too_large"),
        (StoreUnavailableError(), 503, "store_unavailable"),
        (RunlaneError(), 400, "runlane"),
    ],
)
def test_status_and_code_table(exc: RunlaneError, status: int, code: str) -> None:
    assert status_for(exc) == status
    assert error_code(exc) == code


class Item(BaseModel):
    limit: int
    name: str


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret token sk-123 in /etc/passwd")

    @app.get("/missing")
    async def missing() -> None:
        raise ThreadNotFoundError("no thread has the id 'x'")

    @app.post("/items")
    async def items(item: Item) -> Item:
        return item

    install_error_handlers(app)
    return app


async def _request(method: str, url: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_500_never_echoes_the_exception(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="runlane.server.errors"):
        response = await _request("GET", "/boom")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Internal server error",
        "message": "Internal server error",
        "code": "internal_error",
    }
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged, "the 500 must be logged with its traceback"
    assert "secret token" in str(logged[0].exc_info[1])  # type: ignore[index]


@pytest.mark.anyio
async def test_runlane_error_maps_to_json_shape() -> None:
    response = await _request("GET", "/missing")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "no thread has the id 'x'",
        "message": "no thread has the id 'x'",
        "code": "thread_not_found",
    }


@pytest.mark.anyio
async def test_validation_error_names_the_fields() -> None:
    response = await _request("POST", "/items", json={"limit": "many"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert "limit" in body["message"]
    assert "name" in body["message"]
    assert body["detail"] == body["message"]


@pytest.mark.anyio
async def test_http_exception_keeps_the_shape() -> None:
    response = await _request("GET", "/nowhere")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "message": "Not Found", "code": "http_404"}
    response = await _request("DELETE", "/items")
    assert response.status_code == 405
    assert response.json()["code"] == "http_405"
