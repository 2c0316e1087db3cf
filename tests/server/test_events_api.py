"""The event log routes: run events, thread and run messages, token usage, the run's stats.

The bundled ``agent`` graph (a scripted model reporting usage, and a tool) runs
through the app; each test reads back what its runs recorded.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from runlane.config import ConfigurationError, Settings
from runlane.examples.agent import MODEL_NAME
from runlane.server.app import create_app

pytestmark = pytest.mark.anyio

TEXT = "one two three"
ANSWER = 'Your message "one two three" has 3 words.'
CONTENTS = [TEXT, "Let me count the words.", "3", ANSWER]
TYPES = ["human_input", "ai_message", "tool_end", "ai_message"]


async def agent_run(client: httpx.AsyncClient, tid: str, text: str = TEXT) -> str:
    response = await client.post(
        f"/threads/{tid}/runs/wait",
        json={"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": text}]}},
    )
    assert response.status_code == 200, response.text
    runs = (await client.get(f"/threads/{tid}/runs")).json()
    return str(runs[0]["run_id"])


async def new_thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/threads", json={})).json()["thread_id"])


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def test_thread_messages_are_the_runs_messages_in_order(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    rid = await agent_run(client, tid)
    page = ok(await client.get(f"/threads/{tid}/messages"))
    assert page["has_more"] is False
    items = page["items"]
    assert [m["content"] for m in items] == CONTENTS
    assert [m["event_type"] for m in items] == TYPES
    assert {m["run_id"] for m in items} == {rid}
    assert {m["category"] for m in items} == {"message"}
    seqs = [m["seq"] for m in items]
    assert seqs == sorted(seqs)
    assert "user_id" not in items[0]
    assert items[1]["metadata"]["usage"] == {
        "input_tokens": 3,
        "output_tokens": 5,
        "total_tokens": 8,
    }
    assert items[3]["metadata"]["model"] == MODEL_NAME
    assert ok(await client.get(f"/threads/{tid}/runs/{rid}/messages"))["items"] == items


async def test_message_pages_forward_and_backward(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    first = await agent_run(client, tid)
    second = await agent_run(client, tid, "four")
    everything = ok(await client.get(f"/threads/{tid}/messages", params={"limit": 100}))["items"]
    assert len(everything) == 8
    seqs = [m["seq"] for m in everything]

    head = ok(await client.get(f"/threads/{tid}/messages", params={"limit": 3}))
    assert ([m["seq"] for m in head["items"]], head["has_more"]) == (seqs[:3], True)
    rest = ok(
        await client.get(f"/threads/{tid}/messages", params={"limit": 10, "after_seq": seqs[2]})
    )
    assert ([m["seq"] for m in rest["items"]], rest["has_more"]) == (seqs[3:], False)
    tail = ok(
        await client.get(f"/threads/{tid}/messages", params={"limit": 2, "before_seq": seqs[-1]})
    )
    assert ([m["seq"] for m in tail["items"]], tail["has_more"]) == (seqs[-3:-1], True)

    run_page = ok(await client.get(f"/threads/{tid}/runs/{second}/messages", params={"limit": 2}))
    assert [m["content"] for m in run_page["items"]] == ["four", "Let me count the words."]
    assert run_page["has_more"] is True
    assert {m["run_id"] for m in run_page["items"]} == {second}
    older = ok(await client.get(f"/threads/{tid}/runs/{first}/messages"))["items"]
    assert [m["content"] for m in older] == CONTENTS


async def test_run_events_filter_by_type_and_page(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    rid = await agent_run(client, tid)
    url = f"/threads/{tid}/runs/{rid}/events"
    everything = ok(await client.get(url))["items"]
    assert [e["event_type"] for e in everything] == [
        "human_input",
        "llm_end",
        "ai_message",
        "tool_end",
        "llm_end",
        "ai_message",
        "run.delivery",
    ]
    traces = ok(await client.get(url, params={"types": ["llm_end", "run.delivery"]}))["items"]
    assert [e["event_type"] for e in traces] == ["llm_end", "llm_end", "run.delivery"]
    assert traces[0]["content"]["caller"] == "lead_agent"
    assert traces[0]["content"]["latency_ms"] >= 0
    assert traces[2]["content"]["status"] == "success"
    page = ok(await client.get(url, params={"limit": 2, "after_seq": everything[1]["seq"]}))
    assert [e["seq"] for e in page["items"]] == [e["seq"] for e in everything[2:4]]
    assert page["has_more"] is True


async def test_token_usage_adds_up_every_run(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    empty = ok(await client.get(f"/threads/{tid}/token-usage"))
    zero = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "llm_calls": 0}
    assert empty == {"total": zero, "by_model": {}, "by_caller": {}}
    await agent_run(client, tid)
    await agent_run(client, tid, "four")
    usage = ok(await client.get(f"/threads/{tid}/token-usage"))
    # one token per word. Run 1: (3 in, 5 out) + (9 in, 8 out); run 2 reads the whole
    # thread: (17 + 1 in, 5 out) + (18 + 5 + 1 in, 6 out).
    total = {"input_tokens": 54, "output_tokens": 24, "total_tokens": 78, "llm_calls": 4}
    assert usage == {
        "total": total,
        "by_model": {MODEL_NAME: total},
        "by_caller": {"lead_agent": total},
    }


async def test_the_run_object_carries_its_completion_stats(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    rid = await agent_run(client, tid)
    run = ok(await client.get(f"/threads/{tid}/runs/{rid}"))
    assert (run["total_input_tokens"], run["total_output_tokens"], run["total_tokens"]) == (
        12,
        13,
        25,
    )
    assert run["llm_call_count"] == 2
    assert run["token_usage_by_model"] == {
        MODEL_NAME: {"input_tokens": 12, "output_tokens": 13, "total_tokens": 25, "llm_calls": 2}
    }
    assert (run["message_count"], run["first_human_message"], run["last_ai_message"]) == (
        4,
        TEXT,
        ANSWER,
    )
    listed = ok(await client.get(f"/threads/{tid}/runs"))
    assert listed[0]["total_tokens"] == 25


async def test_unknown_threads_and_runs_are_404(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    rid = await agent_run(client, tid)
    other = await new_thread(client)
    ghost = str(uuid.uuid4())
    for path in (
        f"/threads/{ghost}/messages",
        f"/threads/{ghost}/token-usage",
        f"/threads/{ghost}/runs/{rid}/events",
        f"/threads/{ghost}/runs/{rid}/messages",
        f"/threads/{tid}/runs/{ghost}/events",
        f"/threads/{tid}/runs/{ghost}/messages",
        f"/threads/{other}/runs/{rid}/events",  # a run of another thread
        f"/threads/{other}/runs/{rid}/messages",
    ):
        response = await client.get(path)
        assert response.status_code == 404, (path, response.text)


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"after_seq": -1}, {"before_seq": "x"}]
)
async def test_bad_paging_is_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    tid = await new_thread(client)
    assert (await client.get(f"/threads/{tid}/messages", params=params)).status_code == 422


async def test_the_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = ok(await client.get("/openapi.json"))["paths"]
    for path in (
        "/threads/{thread_id}/runs/{run_id}/events",
        "/threads/{thread_id}/messages",
        "/threads/{thread_id}/runs/{run_id}/messages",
        "/threads/{thread_id}/token-usage",
    ):
        assert "get" in paths[path], path
    parameters = {
        p["name"] for p in paths["/threads/{thread_id}/runs/{run_id}/events"]["get"]["parameters"]
    }
    assert {"types", "limit", "after_seq"} <= parameters


@pytest.mark.parametrize("backend", ["sql", "jsonl", "memory"])
async def test_every_event_store_backend_serves_the_messages(
    settings: Settings, backend: str
) -> None:
    app: FastAPI = create_app(settings.model_copy(update={"event_store": backend}))
    async with app.router.lifespan_context(app):
        kind = type(app.state.services.events).__name__.lower()
        assert kind.startswith(backend), kind
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://runlane.test") as c:
            tid = await new_thread(c)
            await agent_run(c, tid)
            items = ok(await c.get(f"/threads/{tid}/messages"))["items"]
            assert [m["content"] for m in items] == CONTENTS


def test_the_event_store_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings().event_store == "sql"
    monkeypatch.setenv("RUNLANE_EVENT_STORE", "jsonl")
    assert Settings().event_store == "jsonl"
    monkeypatch.setenv("RUNLANE_EVENT_STORE", "redis")
    with pytest.raises(ValueError, match="event_store"):
        Settings()
    shared = {
        "workers": 2,
        "database_url": "postgresql+asyncpg://db/runlane",
        "redis_url": "redis://cache",
    }
    Settings(**shared, event_store="sql").check_deployment()
    with pytest.raises(ConfigurationError, match="RUNLANE_EVENT_STORE=sql"):
        Settings(**shared, event_store="memory").check_deployment()


async def test_deleting_a_thread_deletes_its_events(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tid = await new_thread(client)
    await agent_run(client, tid)
    events = app.state.services.events
    assert await events.count_messages(tid) == len(CONTENTS)
    assert (await client.delete(f"/threads/{tid}")).status_code == 204
    assert await events.count_messages(tid) == 0
