"""Threads, assistants and error mapping through the Python ``langgraph-sdk``."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from tests.e2e.helpers import first_part, human

pytestmark = pytest.mark.anyio

AGENT_ASSISTANT_ID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "agent"))


# --- threads ------------------------------------------------------------------


async def test_thread_create_get_update_delete(client: Any) -> None:
    marker = uuid.uuid4().hex
    created = await client.threads.create(metadata={"owner": "e2e", "marker": marker})
    tid = created["thread_id"]
    assert uuid.UUID(tid)
    assert created["status"] == "idle"
    assert created["metadata"] == {"owner": "e2e", "marker": marker}
    for key in ("created_at", "updated_at"):
        assert isinstance(created[key], str)
        assert created[key]

    fetched = await client.threads.get(tid)
    assert fetched["thread_id"] == tid
    assert fetched["metadata"] == created["metadata"]
    assert fetched["status"] == "idle"

    updated = await client.threads.update(tid, metadata={"stage": "two"})
    assert updated["metadata"] == {"owner": "e2e", "marker": marker, "stage": "two"}, (
        "PATCH /threads/{id} merges metadata"
    )
    assert (await client.threads.get(tid))["metadata"]["stage"] == "two"

    await client.threads.delete(tid)
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)
    with pytest.raises(NotFoundError):
        await client.threads.delete(tid)


async def test_thread_create_with_id_and_if_exists(client: Any) -> None:
    tid = str(uuid.uuid4())
    first = await client.threads.create(thread_id=tid, metadata={"n": 1})
    assert first["thread_id"] == tid
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=tid)
    again = await client.threads.create(thread_id=tid, if_exists="do_nothing", metadata={"n": 2})
    assert again["thread_id"] == tid
    assert again["metadata"] == {"n": 1}, "do_nothing returns the existing thread unchanged"


async def test_thread_graph_id_goes_to_metadata(client: Any) -> None:
    created = await client.threads.create(graph_id="agent")
    assert created["metadata"].get("graph_id") == "agent"


async def test_thread_search_by_metadata_ids_status_and_paging(client: Any) -> None:
    marker = uuid.uuid4().hex
    tids = [
        (await client.threads.create(metadata={"marker": marker, "i": i}))["thread_id"]
        for i in range(3)
    ]
    other = (await client.threads.create(metadata={"marker": "someone-else"}))["thread_id"]

    found = await client.threads.search(metadata={"marker": marker}, limit=10)
    assert sorted(t["thread_id"] for t in found) == sorted(tids)
    assert other not in {t["thread_id"] for t in found}

    newest_first = await client.threads.search(
        metadata={"marker": marker}, sort_by="created_at", sort_order="desc"
    )
    assert [t["thread_id"] for t in newest_first] == list(reversed(tids))
    oldest_first = await client.threads.search(
        metadata={"marker": marker}, sort_by="created_at", sort_order="asc"
    )
    assert [t["thread_id"] for t in oldest_first] == tids

    page1 = await client.threads.search(
        metadata={"marker": marker}, limit=2, offset=0, sort_order="asc", sort_by="created_at"
    )
    page2 = await client.threads.search(
        metadata={"marker": marker}, limit=2, offset=2, sort_order="asc", sort_by="created_at"
    )
    assert [t["thread_id"] for t in page1 + page2] == tids

    by_ids = await client.threads.search(ids=[tids[0], other])
    assert {t["thread_id"] for t in by_ids} == {tids[0], other}

    idle = await client.threads.search(metadata={"marker": marker}, status="idle")
    assert len(idle) == 3
    assert await client.threads.search(metadata={"marker": marker}, status="busy") == []
    assert await client.threads.count(metadata={"marker": marker}) == 3


async def test_thread_state_after_a_run(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "agent", input=human("state please"))
    state = await client.threads.get_state(tid)
    assert state["next"] == []
    assert state["values"]["messages"][-1]["content"] == 'Your message "state please" has 2 words.'
    thread = await client.threads.get(tid)
    assert thread["status"] == "idle"
    assert thread["values"]["messages"][-1]["content"] == state["values"]["messages"][-1]["content"]
    history = await client.threads.get_history(tid, limit=100)
    assert history, "history is not empty after a run"
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"], (
        "history is newest first"
    )


# --- assistants -----------------------------------------------------------------


async def test_assistants_search_lists_one_default_per_graph(client: Any) -> None:
    found = await client.assistants.search(limit=100)
    by_graph = {a["graph_id"]: a for a in found}
    assert {"agent", "hitl", "nested", "gate", "ticker"} <= set(by_graph)
    agent = by_graph["agent"]
    assert agent["assistant_id"] == AGENT_ASSISTANT_ID
    assert agent["metadata"].get("created_by") == "system"
    only_agent = await client.assistants.search(graph_id="agent")
    assert [a["assistant_id"] for a in only_agent] == [AGENT_ASSISTANT_ID]


@pytest.mark.parametrize("assistant_id", ["agent", AGENT_ASSISTANT_ID])
async def test_assistant_get_by_graph_name_or_uuid(client: Any, assistant_id: str) -> None:
    assistant = await client.assistants.get(assistant_id)
    assert assistant["assistant_id"] == AGENT_ASSISTANT_ID
    assert assistant["graph_id"] == "agent"
    assert assistant["version"] == 1
    for key in ("config", "metadata", "created_at", "updated_at", "name"):
        assert key in assistant, key


async def test_assistant_schemas(client: Any) -> None:
    schemas = await client.assistants.get_schemas("agent")
    assert schemas["graph_id"] == "agent"
    for key in ("input_schema", "output_schema", "state_schema", "config_schema"):
        assert key in schemas, key
    state_props = schemas["state_schema"]["properties"]
    assert "messages" in state_props
    context = schemas.get("context_schema")
    assert context is not None, "the agent's context_schema (AgentContext) is exposed"
    assert "signature" in context.get("properties", {})


async def test_assistant_graph_drawing(client: Any) -> None:
    drawn = await client.assistants.get_graph("agent")
    node_ids = {node["id"] for node in drawn["nodes"]}
    assert {"__start__", "agent", "tools", "__end__"} <= node_ids
    edges = {(edge["source"], edge["target"]) for edge in drawn["edges"]}
    assert ("__start__", "agent") in edges
    assert ("tools", "agent") in edges


# --- errors ---------------------------------------------------------------------


async def test_unknown_thread_is_not_found_everywhere(client: Any) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        await client.threads.get(missing)
    with pytest.raises(NotFoundError):
        await client.threads.update(missing, metadata={"a": 1})
    with pytest.raises(NotFoundError):
        await client.threads.get_state(missing)
    with pytest.raises(NotFoundError):
        await client.runs.create(missing, "agent", input=human("hi"))
    with pytest.raises(NotFoundError):  # before any event
        await first_part(client.runs.stream(missing, "agent", input=human("hi")))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(missing, "agent", input=human("hi"))
    assert caught.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        await client.runs.list(missing)
    with pytest.raises(NotFoundError):
        await client.runs.get(missing, str(uuid.uuid4()))


async def test_unknown_run_and_assistant_are_not_found(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await client.runs.cancel(tid, str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await client.assistants.get("no-such-graph")
    with pytest.raises(NotFoundError):
        await client.runs.create(tid, "no-such-graph", input=human("hi"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream_mode", "not-a-mode"),
        ("multitask_strategy", "sometimes"),
        ("if_not_exists", "perhaps"),
        ("interrupt_before", 42),
    ],
)
async def test_bad_run_body_is_unprocessable(client: Any, field: str, value: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(tid, "agent", input=human("hi"), **{field: value})
    assert await client.runs.list(tid) == [], "nothing half-created on a rejected request"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_bad_thread_bodies_are_unprocessable(client: Any) -> None:
    with pytest.raises(UnprocessableEntityError):
        await client.threads.create(if_exists="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntityError):
        await client.http.post("/threads", json={"metadata": "not-an-object"})
    with pytest.raises(UnprocessableEntityError):
        # runlane accepts 1-64 characters from [A-Za-z0-9_-] (a superset of UUIDs)
        await client.threads.create(thread_id="spaces and !marks")
    with pytest.raises(UnprocessableEntityError):
        await client.threads.create(thread_id="x" * 65)
    with pytest.raises(UnprocessableEntityError):
        await client.threads.search(limit=-1)
