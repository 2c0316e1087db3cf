"""The parts of the contract a client can see beyond the basic calls: identity keys the
server owns, fields it refuses, body limits, heartbeats, meta routes, interrupt_after.

This module's server runs with a small body limit and a fast heartbeat.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import UnprocessableEntityError

from tests.e2e.conftest import CLIENT_TIMEOUT, RunningServer
from tests.e2e.helpers import (
    AGENT_TOOL_CALL_TEXT,
    agent_answer,
    assert_well_formed,
    collect,
    gate_input,
    human,
    read_until,
)
from tests.e2e.proxy import CuttingProxy

pytestmark = pytest.mark.anyio

MAX_BODY = 64 * 1024
HEARTBEAT_S = 0.2
SERVER_ENV = {
    "RUNLANE_MAX_BODY_BYTES": str(MAX_BODY),
    "RUNLANE_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
}


async def _thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def test_configurable_thread_id_cannot_point_at_another_thread(client: Any) -> None:
    mine = await _thread(client)
    victim = await _thread(client)
    output = await client.runs.wait(
        mine,
        "agent",
        input=human("sneaky"),
        config={"configurable": {"thread_id": victim, "checkpoint_ns": "x"}},
    )
    assert output["messages"][-1]["content"] == agent_answer("sneaky")
    assert (await client.threads.get_state(mine))["values"]["messages"]
    assert not (await client.threads.get_state(victim))["values"], (
        "a run never writes another thread's checkpoints"
    )


async def test_unsupported_webhook_is_refused_naming_the_field(client: Any) -> None:
    tid = await _thread(client)
    with pytest.raises(UnprocessableEntityError, match="webhook"):
        await client.runs.create(tid, "agent", input=human("hi"), webhook="http://127.0.0.1:9/hook")
    assert await client.runs.list(tid) == []


async def test_oversized_body_is_413(client: Any) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.threads.create(metadata={"blob": "x" * (MAX_BODY + 1)})
    assert caught.value.response.status_code == 413
    small = await client.threads.create(metadata={"blob": "x" * 1000})
    assert small["metadata"]["blob"] == "x" * 1000


async def test_heartbeats_flow_while_a_run_is_quiet(client: Any, server: RunningServer) -> None:
    """Comment lines arrive while the run emits nothing; the SDK skips them."""
    tid = await _thread(client)
    payload, gate = gate_input(server.gates, "quiet")
    try:
        async with CuttingProxy(server.port, None) as proxy:
            tapped = get_client(url=proxy.url, api_key=None, timeout=CLIENT_TIMEOUT)
            try:
                stream = tapped.runs.stream(tid, "gate", input=payload, stream_mode="custom")
                head = await read_until(stream, lambda p: p.event == "custom")
                with anyio.fail_after(HEARTBEAT_S * 25):
                    await proxy.comment_seen.wait()
                gate.touch()
                parts = head + await collect(stream)
            finally:
                await tapped.aclose()
    finally:
        gate.touch()
    assert_well_formed(parts)
    assert [p.event for p in parts] == ["metadata", "custom", "end"], "heartbeats never surface"


async def test_meta_routes(client: Any) -> None:
    assert await client.http.get("/ok") == {"ok": True}
    info = await client.http.get("/info")
    assert isinstance(info, dict)
    assert "version" in info
    spec = await client.http.get("/openapi.json")
    assert "/threads/{thread_id}/runs/stream" in spec["paths"]


async def test_interrupt_after_then_continue(client: Any) -> None:
    tid = await _thread(client)
    paused = await client.runs.wait(tid, "agent", input=human("a b"), interrupt_after=["agent"])
    assert [m["content"] for m in paused["messages"]] == ["a b", AGENT_TOOL_CALL_TEXT]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert (await client.threads.get_state(tid))["next"] == ["tools"]
    done = await client.runs.wait(tid, "agent", input=None, interrupt_after=["agent"])
    assert done["messages"][-1]["content"] == agent_answer("a b")


async def test_interrupt_before_star(client: Any) -> None:
    tid = await _thread(client)
    paused = await client.runs.wait(tid, "agent", input=human("a b"), interrupt_before="*")
    assert [m["content"] for m in paused["messages"]] == ["a b"]
    assert (await client.threads.get_state(tid))["next"] == ["agent"]


async def test_thread_ids_chosen_by_the_client_work_end_to_end(client: Any) -> None:
    tid = f"e2e_{uuid.uuid4().hex}"
    await client.threads.create(thread_id=tid)
    output = await client.runs.wait(tid, "agent", input=human("x"))
    assert output["messages"][-1]["content"] == agent_answer("x")
    parts = await collect(client.runs.stream(tid, "agent", input=human("y")))
    assert_well_formed(parts)
    assert parts[0].data["thread_id"] == tid
