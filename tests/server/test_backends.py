"""The lifespan on the shared backends: Postgres (migrated by ``runlane migrate``) and Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from runlane.config import BUNDLED_EXAMPLE, ConfigurationError, Settings
from runlane.runtime.stream_bridge.redis import RedisStreamBridge
from runlane.server.app import create_app


@pytest.mark.anyio
@pytest.mark.postgres
@pytest.mark.redis
async def test_postgres_and_redis(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        config=BUNDLED_EXAMPLE, data_dir=tmp_path, database_url=postgres_url,
        redis_url=redis_url, redis_key_prefix=redis_prefix,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert isinstance(app.state.services.bridge, RedisStreamBridge)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/assistants/agent")).status_code == 200
            thread = (await client.post("/threads", json={"metadata": {"graph_id": "hitl"}}))
            tid = thread.json()["thread_id"]
            update = await client.post(
                f"/threads/{tid}/state",
                json={"values": {"approved": True}, "as_node": "propose"},
            )
            assert update.status_code == 200, update.text
            got = (await client.get(f"/threads/{tid}")).json()
            assert got["values"]["approved"] is True
            assert got["status"] == "interrupted"
            assert (await client.delete(f"/threads/{tid}")).status_code == 204


@pytest.mark.anyio
@pytest.mark.postgres
async def test_unmigrated_postgres_is_refused(tmp_path: Path, postgres_url: str) -> None:
    import asyncpg

    name = f"runlane_empty_{uuid.uuid4().hex[:10]}"
    admin_url = postgres_url.replace("postgresql+asyncpg", "postgresql").rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{admin_url}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        settings = Settings(
            config=BUNDLED_EXAMPLE, data_dir=tmp_path,
            database_url=postgres_url.rsplit("/", 1)[0] + f"/{name}",
        )
        app = create_app(settings)
        with pytest.raises(ConfigurationError, match="runlane migrate"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
