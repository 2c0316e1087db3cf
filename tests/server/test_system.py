from __future__ import annotations

import httpx
import pytest

import runlane
from runlane.server.metrics import HTTP_REQUESTS
from tests.server.prometheus import parse_prometheus


@pytest.mark.anyio
async def test_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/ok")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.anyio
async def test_info(client: httpx.AsyncClient) -> None:
    body = (await client.get("/info")).json()
    assert body["version"] == runlane.__version__
    assert body["flags"]["assistants"] is True
    assert body["flags"]["crons"] is False


@pytest.mark.anyio
async def test_openapi(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    spec = response.json()
    assert "/threads/{thread_id}/state" in spec["paths"]
    assert "/assistants/{assistant_id}/graph" in spec["paths"]


@pytest.mark.anyio
async def test_docs(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


@pytest.mark.anyio
async def test_metrics_parse_and_count_requests(client: httpx.AsyncClient) -> None:
    before = HTTP_REQUESTS.value(method="GET", route="/threads/{thread_id}", status="404")
    await client.get("/threads/nope")
    await client.get("/no/such/path")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(response.text)
    requests = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in samples["runlane_http_requests_total"]
    }
    assert requests[("GET", "/threads/{thread_id}", "404")] == before + 1
    assert requests[("GET", "<unmatched>", "404")] >= 1
    assert not any("nope" in route for _, route, _ in requests)
    for name in (
        "runlane_runs_active",
        "runlane_sse_subscribers",
        "runlane_stream_bridge_total_streams",
        "runlane_local_run_records",
        "runlane_runs_created_total",
        "runlane_runs_finished_total",
        "runlane_claimed_total",
        "runlane_fenced_total",
        "runlane_orphans_recovered_total",
        "runlane_lease_unconfirmed_seconds",
    ):
        assert name in response.text, name
    assert samples["runlane_runs_active"] == [({}, 0.0)]
    assert samples["runlane_fenced_total"] == [({}, 0.0)]
