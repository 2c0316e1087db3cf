"""The official JS client (``@langchain/langgraph-sdk`` under Node) against a real server.

``tests/e2e/js/stream_and_join.mjs`` streams a run with ``values`` and
``messages-tuple``, resumes it with ``joinStream(..., { lastEventId })`` at
several cut points, and cuts a live run by aborting the request;
``tests/e2e/js/reconnect.mjs`` streams through a proxy that kills the
connection after the k-th frame, so the JS client's own reconnect
(``Location`` + ``Last-Event-ID``) is exercised. The scripts print their
observations as JSON, checked here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.helpers import agent_answer
from tests.e2e.proxy import CuttingProxy

NODE_TIMEOUT_S = 60


def _run_script(node_project: Path, script: str, server: RunningServer) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    try:
        done = subprocess.run(
            [node, str(node_project / script), server.url],
            cwd=node_project,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {script} did not finish within {NODE_TIMEOUT_S}s: {exc.stderr!r}")
    assert done.returncode == 0, f"node {script} failed ({done.returncode}):\n{done.stderr}"
    return dict(json.loads(done.stdout))


def _triples(parts: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(p["id"], p["event"], json.dumps(p["data"], sort_keys=True)) for p in parts]


def _assert_well_formed(parts: list[dict[str, Any]], status: str = "success") -> None:
    names = [p["event"] for p in parts]
    assert names[0] == "metadata", names
    assert names[-1] == "end", names
    assert parts[-1]["data"]["status"] == status
    ids = [p["id"] for p in parts]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), ids


def test_js_client_streams_and_joins(node_project: Path, server: RunningServer) -> None:
    out = _run_script(node_project, "stream_and_join.mjs", server)
    streamed = out["streamed"]
    _assert_well_formed(streamed)
    assert streamed[0]["data"]["run_id"] == out["runId"]
    assert streamed[0]["data"]["thread_id"] == out["threadId"]
    names = {p["event"] for p in streamed}
    assert names == {"metadata", "values", "messages", "end"}, names

    answer = agent_answer("hello from node")
    values = [p["data"] for p in streamed if p["event"] == "values"]
    assert values[-1]["messages"][-1]["content"] == answer
    tuples = [p["data"] for p in streamed if p["event"] == "messages"]
    assert all(isinstance(t, list) and len(t) == 2 for t in tuples)
    tokens = "".join(m["content"] for m, meta in tuples if meta.get("langgraph_node") == "agent")
    assert tokens == "Let me count the words." + answer
    assert out["finalValues"]["messages"][-1]["content"] == answer

    full = _triples(streamed)
    assert _triples(out["replay"]) == full, "joinStream from -1 replays the whole run"
    for k, joined in out["joins"].items():
        assert _triples(joined) == full[int(k) :], f"joinStream after event {k}"

    live = out["live"]
    assert len(live["head"]) == 3
    _assert_well_formed(live["full"])
    assert _triples(live["head"] + live["tail"]) == _triples(live["full"]), (
        "a live run cut by aborting the request resumes exactly once"
    )
    ticks = [p["data"]["tick"] for p in live["full"] if p["event"] == "custom"]
    assert ticks == list(range(1, 11))


TICKS = 10
PACE_S = 0.05


@pytest.mark.anyio
async def test_js_client_reconnects_after_the_connection_is_killed(
    node_project: Path, server: RunningServer
) -> None:
    from langgraph_sdk import get_client

    node = shutil.which("node")
    assert node is not None
    direct = get_client(url=server.url, api_key=None)
    cuts = [1, 2, 6, TICKS + 2, TICKS + 3]  # up to the last frame (end)
    results: dict[int, tuple[str, dict[str, Any], CuttingProxy]] = {}

    async def one(k: int) -> None:
        tid = (await direct.threads.create())["thread_id"]
        async with CuttingProxy(server.port, k) as proxy:
            done = await anyio.run_process(
                [
                    node,
                    str(node_project / "reconnect.mjs"),
                    proxy.url,
                    tid,
                    str(TICKS),
                    str(PACE_S),
                ],
                cwd=node_project,
                check=False,
            )
        assert done.returncode == 0, f"k={k}: node failed:\n{done.stderr.decode()}"
        results[k] = (tid, json.loads(done.stdout), proxy)

    try:
        with anyio.fail_after(NODE_TIMEOUT_S):
            async with anyio.create_task_group() as group:
                for k in cuts:
                    group.start_soon(one, k)
        for k in cuts:
            tid, out, proxy = results[k]
            parts = out["parts"]
            assert proxy.cut_done, f"k={k}: the proxy never cut the stream"
            assert proxy.connections >= 2, f"k={k}: the JS client did not reconnect"
            _assert_well_formed(parts)
            ticks = [p["data"]["tick"] for p in parts if p["event"] == "custom"]
            assert ticks == list(range(1, TICKS + 1)), f"k={k}: ticks {ticks}"
            full = [
                p
                async for p in direct.runs.join_stream(
                    tid, parts[0]["data"]["run_id"], last_event_id="-1"
                )
            ]
            expected = [(p.id, p.event, json.dumps(p.data, sort_keys=True)) for p in full]
            assert _triples(parts) == expected, f"k={k}: not exactly once"
    finally:
        await direct.aclose()
