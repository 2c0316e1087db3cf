"""Runs routes as JSON: create, get, list, wait/join bodies, cancel, delete, 404s, 422s."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.server import runs_graphs, runs_support

pytestmark = pytest.mark.anyio

settings = runs_support.settings
_gates = runs_support._gates

RUN_FIELDS = {"run_id", "thread_id", "assistant_id", "created_at", "updated_at", "status",
              "metadata", "multitask_strategy", "kwargs"}


async def new_thread(client: httpx.AsyncClient) -> str:
    response = await client.post("/threads", json={})
    assert response.status_code == 200
    return str(response.json()["thread_id"])


async def settle(app: FastAPI, run_id: str) -> None:
    record = await app.state.services.manager.get(run_id)
    if record is not None and record.task is not None:
        await record.task


async def test_create_get_and_list(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    response = await client.post(
        f"/threads/{tid}/runs",
        json={"assistant_id": "emit", "input": {"n": 1}, "metadata": {"k": "v"},
              "stream_mode": "values", "stream_subgraphs": False, "stream_resumable": False},
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert set(run) >= RUN_FIELDS
    rid = run["run_id"]
    assert response.headers["content-location"] == f"/threads/{tid}/runs/{rid}"
    assert run["thread_id"] == tid
    assert run["status"] == "pending"
    assert run["metadata"] == {"k": "v"}
    assert run["multitask_strategy"] == "enqueue"
    assert run["kwargs"]["graph_id"] == "emit"
    await settle(app, rid)
    got = (await client.get(f"/threads/{tid}/runs/{rid}")).json()
    assert got["status"] == "success"
    second = (await client.post(f"/threads/{tid}/runs",
                                json={"assistant_id": "emit", "input": {"n": 1}})).json()
    await settle(app, second["run_id"])
    listed = (await client.get(f"/threads/{tid}/runs")).json()
    assert [r["run_id"] for r in listed] == [second["run_id"], rid]
    page = (await client.get(f"/threads/{tid}/runs", params={"limit": 1, "offset": 1})).json()
    assert [r["run_id"] for r in page] == [rid]
    none = (await client.get(f"/threads/{tid}/runs", params={"status": "error"})).json()
    assert none == []
    ok = (await client.get(f"/threads/{tid}/runs", params={"status": "success"})).json()
    assert len(ok) == 2


async def test_identity_keys_are_overwritten(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    other = await new_thread(client)
    config = {"configurable": {"thread_id": other, "checkpoint_ns": "x", "run_id": "r",
                               "assistant_id": "a", "graph_id": "g", "user_id": "mallory",
                               "keep": 1}}
    run = (await client.post(f"/threads/{tid}/runs", json={
        "assistant_id": "emit", "input": {"n": 1}, "config": config,
        "checkpoint": {"thread_id": other, "checkpoint_id": None}})).json()
    configurable = run["kwargs"]["config"]["configurable"]
    assert configurable["thread_id"] == tid
    assert configurable["checkpoint_ns"] == ""
    assert configurable["run_id"] == run["run_id"]
    assert configurable["graph_id"] == "emit"
    assert configurable["assistant_id"] == run["assistant_id"]
    assert configurable["user_id"] is None  # no-auth mode: no user identity
    assert configurable["keep"] == 1
    await settle(app, run["run_id"])
    state = (await client.get(f"/threads/{other}/state")).json()
    assert not state["values"]  # nothing was written to the other thread


async def test_wait_and_join_bodies(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    response = await client.post(f"/threads/{tid}/runs/wait",
                                 json={"assistant_id": "emit", "input": {"n": 2}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"n": 2, "count": 2, "log": []}
    run_path = response.headers["content-location"]
    assert response.headers["location"] == f"{run_path}/join"
    joined = await client.get(response.headers["location"])
    assert joined.status_code == 200
    assert joined.json() == {"n": 2, "count": 2, "log": []}

    failed = await client.post(f"/threads/{tid}/runs/wait",
                               json={"assistant_id": "fail", "input": {"n": 1}})
    error = failed.json()["__error__"]
    assert error["error"] == "ValueError"
    assert "boom" in error["message"]

    hitl = await new_thread(client)
    waiting = await client.post(
        f"/threads/{hitl}/runs/wait",
        json={"assistant_id": "hitl", "input": {"messages": [{"role": "user", "content": "x"}]}},
    )
    body = waiting.json()
    assert body["__interrupt__"]
    assert {"id", "value"} <= set(body["__interrupt__"][0])


async def test_stateless_wait_and_create(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post("/runs/wait", json={"assistant_id": "emit", "input": {"n": 1}})
    assert response.json() == {"n": 1, "count": 1, "log": []}
    assert response.headers["location"].startswith("/runs/")
    created = await client.post("/runs", json={"assistant_id": "emit", "input": {"n": 1}})
    run = created.json()
    assert created.headers["content-location"] == f"/runs/{run['run_id']}"
    assert (await client.get(f"/runs/{run['run_id']}")).json()["run_id"] == run["run_id"]
    joined = await client.get(f"/runs/{run['run_id']}/join")
    assert joined.json() == {"n": 1, "count": 1, "log": []}


async def test_if_not_exists(client: httpx.AsyncClient) -> None:
    tid = str(uuid.uuid4())
    body = {"assistant_id": "emit", "input": {"n": 1}}
    missing = await client.post(f"/threads/{tid}/runs", json=body)
    assert missing.status_code == 404
    assert (await client.get(f"/threads/{tid}")).status_code == 404
    created = await client.post(
        f"/threads/{tid}/runs/wait", json={**body, "if_not_exists": "create"}
    )
    assert created.json() == {"n": 1, "count": 1, "log": []}
    assert (await client.get(f"/threads/{tid}")).status_code == 200


async def test_not_found(client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    ghost_thread, ghost_run = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"assistant_id": "emit", "input": {"n": 1}}
    for path in ("/runs", "/runs/stream", "/runs/wait"):
        assert (await client.post(f"/threads/{ghost_thread}{path}", json=body)).status_code == 404
    assert (await client.get(f"/threads/{ghost_thread}/runs")).status_code == 404
    unknown_assistant = await client.post(f"/threads/{tid}/runs", json={"assistant_id": "nope"})
    assert unknown_assistant.status_code == 404
    assert (await client.post("/runs", json={"assistant_id": str(uuid.uuid4())})).status_code == 404
    for method, path in (("GET", ""), ("GET", "/join"), ("GET", "/stream"),
                         ("POST", "/cancel"), ("DELETE", "")):
        response = await client.request(method, f"/threads/{tid}/runs/{ghost_run}{path}")
        assert response.status_code == 404, (method, path)
        assert response.json()["message"]
    assert (await client.get(f"/runs/{ghost_run}")).status_code == 404
    # A run is only found on its own thread.
    run = (await client.post(f"/threads/{tid}/runs", json=body)).json()
    other = await new_thread(client)
    assert (await client.get(f"/threads/{other}/runs/{run['run_id']}")).status_code == 404


UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    ({"webhook": "http://example.com/hook"}, "webhook"),
    ({"feedback_keys": ["k"]}, "feedback_keys"),
    ({"langsmith_tracer": {"project_name": "p"}}, "langsmith_tracer"),
    ({"strict_resume": True}, "strict_resume"),
    ({"stream_mode": "tools"}, "tools"),
    ({"stream_mode": ["values", "lifecycle"]}, "lifecycle"),
    ({"stream_mode": "bogus"}, "bogus"),
    ({"config": {"configurable": {"a": 1}}, "context": {"b": 2}}, "context"),
    ({"command": {"resume": 1}, "input": {"n": 1}}, "input"),
    ({"durability": "sync", "checkpoint_during": True}, "checkpoint_during"),
    ({"surprise": 1}, "surprise"),
    ({"multitask_strategy": "drop"}, "multitask_strategy"),
    ({"on_disconnect": "explode"}, "on_disconnect"),
    ({"command": {"jump": 1}}, "jump"),
    ({"on_completion": "keep"}, "on_completion"),
    ({"after_seconds": -1}, "after_seconds"),
]


@pytest.mark.parametrize(("extra", "named"), UNSUPPORTED)
async def test_unsupported_or_bad_field_is_422_naming_it(
    client: httpx.AsyncClient, extra: dict[str, Any], named: str
) -> None:
    tid = await new_thread(client)
    response = await client.post(f"/threads/{tid}/runs", json={"assistant_id": "emit", **extra})
    assert response.status_code == 422, response.text
    assert named in response.json()["message"]
    assert (await client.get(f"/threads/{tid}/runs")).json() == []


@pytest.mark.parametrize(("extra", "named"), [
    ({"checkpoint_id": "abc"}, "checkpoint"),
    ({"command": {"resume": "yes"}}, "resume"),
    ({"thread_id": "x"}, "thread_id"),
])
async def test_stateless_refusals(
    client: httpx.AsyncClient, extra: dict[str, Any], named: str
) -> None:
    response = await client.post("/runs", json={"assistant_id": "emit", **extra})
    assert response.status_code == 422
    assert named in response.json()["message"]


async def _gate_run(client: httpx.AsyncClient, tid: str, name: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/threads/{tid}/runs",
                                 json={"assistant_id": "gate", "input": {"name": name}, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_multitask_reject_and_enqueue(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    first = await _gate_run(client, tid, "a")
    await runs_graphs.ENTERED["a"].wait()
    rejected = await client.post(
        f"/threads/{tid}/runs",
        json={"assistant_id": "gate", "input": {"name": "x"}, "multitask_strategy": "reject"},
    )
    assert rejected.status_code == 409
    second = await _gate_run(client, tid, "b")
    third = await _gate_run(client, tid, "c")
    assert second["status"] == third["status"] == "pending"
    runs_graphs.GATES["a"].set()
    runs_graphs.GATES["b"].set()
    runs_graphs.GATES["c"].set()
    for run in (first, second, third):
        await settle(app, run["run_id"])
    assert runs_graphs.STARTED == ["a", "b", "c"]
    state = (await client.get(f"/threads/{tid}/state")).json()
    assert state["values"]["log"] == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_multitask_interrupt_and_rollback(
    app: FastAPI, client: httpx.AsyncClient, strategy: str
) -> None:
    tid = await new_thread(client)
    runs_graphs.GATES["base"].set()
    done = await client.post(f"/threads/{tid}/runs/wait",
                             json={"assistant_id": "gate", "input": {"name": "base"}})
    assert done.json()["log"] == ["base"]
    first = await _gate_run(client, tid, "a")
    await runs_graphs.ENTERED["a"].wait()
    runs_graphs.GATES["b"].set()
    second = await client.post(f"/threads/{tid}/runs/wait", json={
        "assistant_id": "gate", "input": {"name": "b"}, "multitask_strategy": strategy})
    assert second.json()["log"] == ["base", "b"]
    await settle(app, first["run_id"])
    old = await client.get(f"/threads/{tid}/runs/{first['run_id']}")
    if strategy == "interrupt":
        assert old.json()["status"] == "interrupted"
    else:
        assert old.status_code == 404


async def test_cancel_without_and_with_wait(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    run = await _gate_run(client, tid, "a")
    await runs_graphs.ENTERED["a"].wait()
    response = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel")
    assert response.status_code == 202
    assert response.content == b""
    await settle(app, run["run_id"])
    got = (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()
    assert got["status"] == "interrupted"
    again = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel")
    assert again.status_code == 202  # idempotent

    run2 = await _gate_run(client, tid, "b")
    await runs_graphs.ENTERED["b"].wait()
    waited = await client.post(f"/threads/{tid}/runs/{run2['run_id']}/cancel",
                               params={"wait": "true"})
    assert waited.status_code == 200
    assert isinstance(orjson.loads(waited.content), dict)
    assert (await client.get(f"/threads/{tid}/runs/{run2['run_id']}")).json()["status"] == (
        "interrupted"
    )

    finished = (await client.post(f"/threads/{tid}/runs/wait",
                                  json={"assistant_id": "emit", "input": {"n": 1}}))
    rid = finished.headers["content-location"].rsplit("/", 1)[1]
    assert (await client.post(f"/threads/{tid}/runs/{rid}/cancel")).status_code == 404


async def test_cancel_rollback_deletes_the_run(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    run = await _gate_run(client, tid, "a")
    await runs_graphs.ENTERED["a"].wait()
    response = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel",
                                 params={"action": "rollback"})
    assert response.status_code == 202
    await settle(app, run["run_id"])
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).status_code == 404
    bad = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel",
                            params={"action": "explode"})
    assert bad.status_code in (404, 422)


async def test_delete_run(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    run = await _gate_run(client, tid, "a")
    await runs_graphs.ENTERED["a"].wait()
    busy = await client.delete(f"/threads/{tid}/runs/{run['run_id']}")
    assert busy.status_code == 409
    runs_graphs.GATES["a"].set()
    await settle(app, run["run_id"])
    gone = await client.delete(f"/threads/{tid}/runs/{run['run_id']}")
    assert gone.status_code == 204
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).status_code == 404


async def test_batch(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    response = await client.post("/runs/batch", json=[
        {"assistant_id": "emit", "input": {"n": 1}},
        {"assistant_id": "emit", "input": {"n": 2}, "thread_id": tid},
    ])
    assert response.status_code == 200, response.text
    runs = response.json()
    assert len(runs) == 2
    assert runs[1]["thread_id"] == tid
    assert runs[0]["thread_id"] != tid
    for run in runs:
        await settle(app, run["run_id"])
    missing = await client.post("/runs/batch", json=[
        {"assistant_id": "emit", "input": {"n": 1}, "thread_id": tid},
        {"assistant_id": "emit", "thread_id": str(uuid.uuid4())},
    ])
    assert missing.status_code == 404
    assert len((await client.get(f"/threads/{tid}/runs")).json()) == 1  # nothing created
    invalid = await client.post("/runs/batch", json=[{"assistant_id": "emit", "webhook": "x"}])
    assert invalid.status_code == 422
    assert "webhook" in invalid.json()["message"]


async def test_cancel_many(app: FastAPI, client: httpx.AsyncClient) -> None:
    tid = await new_thread(client)
    a = await _gate_run(client, tid, "a")
    b = await _gate_run(client, tid, "b")
    await runs_graphs.ENTERED["a"].wait()
    response = await client.post("/runs/cancel",
                                 json={"thread_id": tid, "run_ids": [b["run_id"]]})
    assert response.status_code == 204
    assert (await client.get(f"/threads/{tid}/runs/{b['run_id']}")).json()["status"] == (
        "interrupted"
    )
    assert (await client.get(f"/threads/{tid}/runs/{a['run_id']}")).json()["status"] == "running"
    by_status = await client.post("/runs/cancel", json={"status": "running"})
    assert by_status.status_code == 204
    await settle(app, a["run_id"])
    assert (await client.get(f"/threads/{tid}/runs/{a['run_id']}")).json()["status"] == (
        "interrupted"
    )
    unknown = await client.post("/runs/cancel",
                                json={"thread_id": tid, "run_ids": [str(uuid.uuid4())]})
    assert unknown.status_code == 404
    both = await client.post("/runs/cancel", json={"status": "all", "thread_id": tid})
    assert both.status_code == 422
