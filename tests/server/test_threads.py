from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

HUMAN = {"type": "human", "content": "three little words"}


async def _thread(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/threads", json=body)
    assert response.status_code == 200, response.text
    thread: dict[str, Any] = response.json()
    return thread


async def _stateful(client: httpx.AsyncClient, graph_id: str = "hitl") -> str:
    thread = await _thread(client, metadata={"graph_id": graph_id})
    response = await client.post(
        f"/threads/{thread['thread_id']}/state", json={"values": {"messages": [HUMAN]}}
    )
    assert response.status_code == 200, response.text
    return str(thread["thread_id"])


@pytest.mark.anyio
async def test_create_get_and_shape(client: httpx.AsyncClient) -> None:
    thread = await _thread(client, metadata={"owner": "a"})
    uuid.UUID(thread["thread_id"])
    assert thread["status"] == "idle"
    assert thread["metadata"] == {"owner": "a"}
    assert thread["values"] is None
    assert thread["interrupts"] == {}
    assert "user_id" not in thread
    got = (await client.get(f"/threads/{thread['thread_id']}")).json()
    assert got == thread


@pytest.mark.anyio
async def test_create_with_id_and_if_exists(client: httpx.AsyncClient) -> None:
    first = await _thread(client, thread_id="t-1", metadata={"v": 1})
    again = await client.post("/threads", json={"thread_id": "t-1"})
    assert again.status_code == 409
    assert again.json()["code"] == "thread_exists"
    same = await client.post(
        "/threads", json={"thread_id": "t-1", "if_exists": "do_nothing", "metadata": {"v": 2}}
    )
    assert same.status_code == 200
    assert same.json()["metadata"] == first["metadata"]


@pytest.mark.anyio
async def test_unsupported_and_malformed_create_writes_nothing(client: httpx.AsyncClient) -> None:
    for body, field in [
        ({"thread_id": "x1", "ttl": {"ttl": 5}}, "ttl"),
        ({"thread_id": "x2", "supersteps": [{"updates": []}]}, "supersteps"),
        ({"thread_id": "x3", "webhook": "http://h"}, "webhook"),
        ({"thread_id": "x4", "if_exists": "replace"}, "if_exists"),
        ({"thread_id": "bad id!"}, "thread id"),
    ]:
        response = await client.post("/threads", json=body)
        assert response.status_code == 422, body
        assert field in response.json()["message"], response.json()
    assert (await client.post("/threads/count", json={})).json() == 0


@pytest.mark.anyio
async def test_unknown_thread_is_404_everywhere(client: httpx.AsyncClient) -> None:
    tid = str(uuid.uuid4())
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/threads/{tid}", None),
        ("PATCH", f"/threads/{tid}", {"metadata": {}}),
        ("DELETE", f"/threads/{tid}", None),
        ("POST", f"/threads/{tid}/copy", None),
        ("GET", f"/threads/{tid}/state", None),
        ("GET", f"/threads/{tid}/state/abc", None),
        ("POST", f"/threads/{tid}/state/checkpoint", {"checkpoint": {"checkpoint_id": "a"}}),
        ("POST", f"/threads/{tid}/state", {"values": {}}),
        ("POST", f"/threads/{tid}/history", {}),
    ]
    for method, path, body in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "thread_not_found"


@pytest.mark.anyio
async def test_patch_merges_metadata_and_prefers_minimal(client: httpx.AsyncClient) -> None:
    thread = await _thread(client, metadata={"a": 1, "b": 1})
    tid = thread["thread_id"]
    patched = await client.patch(f"/threads/{tid}", json={"metadata": {"b": 2, "c": 3}})
    assert patched.status_code == 200
    assert patched.json()["metadata"] == {"a": 1, "b": 2, "c": 3}
    minimal = await client.patch(
        f"/threads/{tid}", json={"metadata": {"d": 4}}, headers={"Prefer": "return=minimal"}
    )
    assert minimal.status_code == 204
    assert minimal.content == b""
    got = (await client.get(f"/threads/{tid}")).json()
    assert got["metadata"] == {"a": 1, "b": 2, "c": 3, "d": 4}
    refused = await client.patch(f"/threads/{tid}", json={"metadata": {"e": 5}, "ttl": 60})
    assert refused.status_code == 422
    assert "e" not in (await client.get(f"/threads/{tid}")).json()["metadata"]


@pytest.mark.anyio
async def test_search_count_and_pages(client: httpx.AsyncClient) -> None:
    ids = [(await _thread(client, metadata={"n": i, "even": i % 2 == 0}))["thread_id"]
           for i in range(5)]
    assert (await client.post("/threads/count", json={})).json() == 5
    assert (await client.post("/threads/count", json={"metadata": {"even": True}})).json() == 3
    page = await client.post("/threads/search", json={"limit": 2, "sort_order": "asc"})
    assert page.status_code == 200
    assert [t["thread_id"] for t in page.json()] == ids[:2]
    assert page.headers["X-Pagination-Total"] == "5"
    assert page.headers["X-Pagination-Next"] == "2"
    tail = await client.post("/threads/search", json={"limit": 2, "offset": 4, "sort_order": "asc"})
    assert [t["thread_id"] for t in tail.json()] == ids[4:]
    assert "X-Pagination-Next" not in tail.headers
    newest = await client.post("/threads/search", json={})
    assert [t["thread_id"] for t in newest.json()] == ids[::-1]
    by_ids = await client.post("/threads/search", json={"ids": ids[1:3]})
    assert sorted(t["thread_id"] for t in by_ids.json()) == sorted(ids[1:3])
    selected = await client.post(
        "/threads/search", json={"limit": 1, "select": ["thread_id", "status"]}
    )
    assert selected.json() == [{"thread_id": ids[-1], "status": "idle"}]
    idle = await client.post("/threads/search", json={"status": "idle"})
    assert len(idle.json()) == 5
    for body in ({"status": "sleepy"}, {"values": {"x": 1}}, {"sort_by": "color"},
                 {"limit": -1}, {"select": ["nope"]}):
        response = await client.post("/threads/search", json=body)
        assert response.status_code == 422, body


@pytest.mark.anyio
async def test_state_update_get_history_and_status(client: httpx.AsyncClient) -> None:
    tid = await _stateful(client)
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["values"]["messages"][0]["content"] == "three little words"
    assert state["next"] == ["propose"]
    assert state["checkpoint"]["thread_id"] == tid
    first_id = state["checkpoint"]["checkpoint_id"]

    update = await client.post(
        f"/threads/{tid}/state",
        json={"values": {"approved": False}, "as_node": "propose"},
    )
    assert update.status_code == 200, update.text
    checkpoint = update.json()["checkpoint"]
    assert checkpoint["thread_id"] == tid
    assert checkpoint["checkpoint_id"] != first_id
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["next"] == ["review"]
    thread = (await client.get(f"/threads/{tid}")).json()
    assert thread["values"]["approved"] is False
    assert thread["status"] == "interrupted"

    at_first = (await client.get(f"/threads/{tid}/state/{first_id}")).json()
    assert at_first["checkpoint"]["checkpoint_id"] == first_id
    assert "approved" not in at_first["values"]
    by_body = await client.post(
        f"/threads/{tid}/state/checkpoint",
        json={"checkpoint": {"checkpoint_id": first_id}, "select": ["values", "next"]},
    )
    assert by_body.status_code == 200
    assert by_body.json() == {"values": at_first["values"], "next": at_first["next"]}

    history = (await client.post(f"/threads/{tid}/history", json={"limit": 10})).json()
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert ids[0] == checkpoint["checkpoint_id"]
    assert first_id in ids
    assert len((await client.post(f"/threads/{tid}/history", json={"limit": 1})).json()) == 1
    older = (await client.post(
        f"/threads/{tid}/history", json={"before": {"checkpoint_id": ids[0]}}
    )).json()
    assert [h["checkpoint"]["checkpoint_id"] for h in older] == ids[1:]
    by_source = (await client.post(
        f"/threads/{tid}/history", json={"metadata": {"source": "update"}}
    )).json()
    assert by_source
    assert all(h["metadata"]["source"] == "update" for h in by_source)

    rewind = await client.post(
        f"/threads/{tid}/state",
        json={"values": {"approved": True}, "as_node": "propose", "checkpoint_id": first_id},
    )
    assert rewind.status_code == 200


@pytest.mark.anyio
async def test_state_identity_and_bad_updates(client: httpx.AsyncClient) -> None:
    tid = await _stateful(client)
    other = await _stateful(client)
    other_cp = (await client.get(f"/threads/{other}/state")).json()["checkpoint"]
    response = await client.post(f"/threads/{tid}/state/checkpoint", json={"checkpoint": other_cp})
    assert response.status_code == 422
    assert "thread_id" in response.json()["message"]
    response = await client.post(
        f"/threads/{tid}/state", json={"values": {"approved": True}, "as_node": "nowhere"}
    )
    assert response.status_code == 422
    empty = await _thread(client)
    state = (await client.get(f"/threads/{empty['thread_id']}/state")).json()
    assert state["values"] == {}
    assert state["next"] == []
    assert (await client.post(f"/threads/{empty['thread_id']}/history", json={})).json() == []
    no_graph = await client.post(f"/threads/{empty['thread_id']}/state", json={"values": {}})
    assert no_graph.status_code == 409


@pytest.mark.anyio
async def test_copy_keeps_state_and_metadata(client: httpx.AsyncClient) -> None:
    tid = await _stateful(client)
    copied = await client.post(f"/threads/{tid}/copy")
    assert copied.status_code == 200, copied.text
    copy = copied.json()
    assert copy["thread_id"] != tid
    assert copy["metadata"] == {"graph_id": "hitl"}
    assert copy["values"] == (await client.get(f"/threads/{tid}")).json()["values"]
    copy_history = (await client.post(f"/threads/{copy['thread_id']}/history", json={})).json()
    assert len(copy_history) == len(
        (await client.post(f"/threads/{tid}/history", json={})).json()
    )


@pytest.mark.anyio
async def test_delete_removes_thread_and_checkpoints(client: httpx.AsyncClient) -> None:
    tid = await _stateful(client)
    assert (await client.delete(f"/threads/{tid}")).status_code == 204
    assert (await client.get(f"/threads/{tid}")).status_code == 404
    assert (await client.delete(f"/threads/{tid}")).status_code == 404
    recreated = await _thread(client, thread_id=tid, metadata={"graph_id": "hitl"})
    assert recreated["values"] is None
    assert (await client.post(f"/threads/{tid}/history", json={})).json() == []


@pytest.mark.anyio
async def test_prune(client: httpx.AsyncClient) -> None:
    a = await _stateful(client)
    b = (await _thread(client))["thread_id"]
    keep = (await _thread(client))["thread_id"]
    response = await client.post("/threads/prune", json={"thread_ids": [a, b, "missing", a]})
    assert response.status_code == 200
    assert response.json() == {"pruned_count": 2}
    assert (await client.get(f"/threads/{a}")).status_code == 404
    assert (await client.get(f"/threads/{keep}")).status_code == 200
    bad = await client.post("/threads/prune", json={"thread_ids": [keep], "strategy": "all"})
    assert bad.status_code == 422
