"""An app per test on a fresh SQLite database, with its lifespan running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from runlane.config import BUNDLED_EXAMPLE, Settings
from runlane.server.app import create_app


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(
        config=BUNDLED_EXAMPLE,
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://runlane.test") as c:
            yield c
