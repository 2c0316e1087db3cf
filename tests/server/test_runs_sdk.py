"""The real ``langgraph-sdk`` client over the ASGI app (no network).

``get_client`` cannot take a transport, so the SDK's ``LangGraphClient`` is
built around an httpx client on ``ASGITransport``, exactly what ``get_client``
does with a network transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from langgraph_sdk.client import LangGraphClient

from tests.server import runs_support

pytestmark = pytest.mark.anyio

settings = runs_support.settings
_gates = runs_support._gates


@pytest.fixture
async def sdk(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[LangGraphClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://runlane.test") as http:
        yield LangGraphClient(http)


async def test_sdk_stream_wait_join(sdk: LangGraphClient) -> None:
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    created: list[dict[str, object]] = []
    parts = [
        part async for part in sdk.runs.stream(
            tid, "emit", input={"n": 2}, stream_mode="custom",
            on_run_created=lambda meta: created.append(dict(meta)),
        )
    ]
    assert [p.event for p in parts] == ["metadata", "custom", "custom", "end"]
    rid = parts[0].data["run_id"]
    assert created == [{"run_id": rid, "thread_id": tid}]
    assert [p.id for p in parts] == ["1", "2", "3", "4"]
    resumed = [p async for p in sdk.runs.join_stream(tid, rid, last_event_id="2")]
    assert [p.id for p in resumed] == ["3", "4"]
    assert await sdk.runs.join(tid, rid) == {"n": 2, "count": 2, "log": []}
    assert await sdk.runs.wait(tid, "emit", input={"n": 1}) == {"n": 1, "count": 1, "log": []}
    run = await sdk.runs.get(tid, rid)
    assert run["status"] == "success"
    runs = await sdk.runs.list(tid)
    assert runs[-1]["run_id"] == rid


async def test_sdk_stateless_and_errors(sdk: LangGraphClient) -> None:
    parts = [p async for p in sdk.runs.stream(None, "emit", input={"n": 1}, stream_mode="custom")]
    assert parts[-1].event == "end"
    with pytest.raises(Exception, match="ValueError"):
        await sdk.runs.wait(None, "fail", input={"n": 1})
    from langgraph_sdk.errors import UnprocessableEntityError

    thread = await sdk.threads.create()
    with pytest.raises(UnprocessableEntityError, match="webhook"):
        await sdk.runs.create(thread["thread_id"], "emit", webhook="http://example.com")
