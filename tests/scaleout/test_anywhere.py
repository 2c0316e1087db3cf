"""Any process accepts any request for any run: reads, streams, cancels, pre-emption.

One cluster of three processes (``A``, ``B``, ``C``) serves the whole module;
no test here stops a process. Which process executes a run is never assumed:
the ``relay`` graph reports its pid in its events, and the test addresses
"another process" relative to the owner it observed.

- every process serves a run another one admitted (status, output, list);
- the three processes started together on a fresh database without a failure;
- a run created on one process, streamed from a second and cut, resumed on a
  third: every event exactly once, at every cut point up to the live edge;
- a cancel sent to a non-owner stops the run on its owner (its stream ends
  ``interrupted``, the graph goes no further, the thread takes new runs);
- a queued run cancelled on a non-owner never starts;
- an ``interrupt`` / ``rollback`` run posted to a non-owner pre-empts the
  owner's run.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from langgraph_sdk.errors import NotFoundError

from tests.e2e.helpers import collect, part_tuple, read_until
from tests.scaleout.cluster import (
    Cluster,
    Node,
    diagnose,
    executions,
    params,
    run_rows,
    wait_terminal,
    wait_until,
)

pytestmark = pytest.mark.anyio

WAIT_S = 30.0
"""Deadline for anything that crosses processes (a lease renewal is 1 s here)."""


def _waiting(part: Any) -> bool:
    return part.event == "custom" and isinstance(part.data, dict) and "waiting" in part.data


def _ticks(parts: list[Any]) -> list[int]:
    return [p.data["tick"] for p in parts if p.event == "custom" and "tick" in p.data]


def _relay(
    cluster: Cluster, label: str, *, n: int, hold_at: int
) -> tuple[dict[str, Any], dict[str, Any], anyio.Path]:
    """Input, config and (closed) gate of a ``relay`` run that waits after tick ``hold_at``."""
    gate = cluster.gate(label)
    config = params(label=label, n=n, hold_at=hold_at, gate=str(gate))
    return {"log": [f"{label}:in"]}, config, anyio.Path(gate)


async def _thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


class Held:
    """A ``relay`` run known to be waiting at its gate, with its creating stream still open."""

    def __init__(self, cluster: Cluster, gate: anyio.Path, stream: Any, head: list[Any]):
        self.gate = gate
        self.stream = stream
        self.head = head
        self.run_id: str = head[0].data["run_id"]
        self.owner: Node = cluster.node_of_pid(int(head[-1].data["pid"]))

    async def release(self) -> None:
        await self.gate.touch()

    async def rest(self, cluster: Cluster, *also: str) -> list[Any]:
        """The rest of the creating stream, to its end; an AssertionError with the runs'
        rows and log lines if it does not end within ``WAIT_S``."""
        try:
            with anyio.fail_after(WAIT_S):
                return self.head + await collect(self.stream)
        except TimeoutError:
            report = await diagnose(cluster, [self.run_id, *also])
            raise AssertionError(
                f"the stream of run {self.run_id} (owner {self.owner}) did not end "
                f"within {WAIT_S}s:\n{report}"
            ) from None


async def _hold(cluster: Cluster, client: Any, tid: str, label: str) -> Held:
    payload, config, gate = _relay(cluster, label, n=2, hold_at=1)
    stream = client.runs.stream(tid, "relay", input=payload, config=config, stream_mode="custom")
    head = await read_until(stream, _waiting)
    assert head[0].event == "metadata", head
    return Held(cluster, gate, stream, head)


def _other(cluster: Cluster, clients: list[Any], owner: Node, skip: int = 0) -> tuple[Node, Any]:
    """A process that is not ``owner`` (the ``skip``-th such one) and its client."""
    others = [i for i, node in enumerate(cluster.nodes) if node is not owner]
    index = others[skip % len(others)]
    return cluster.nodes[index], clients[index]


# --- reads ------------------------------------------------------------------------------


async def test_three_processes_start_together_on_a_fresh_database(cluster: Cluster) -> None:
    """Started at the same moment on a database no runlane process has opened yet."""
    assert not cluster.start_failures, (
        "a process died during a concurrent start on a fresh database (it was retried):\n"
        + "\n\n".join(cluster.start_failures)
    )


async def test_a_run_admitted_by_one_process_is_served_by_every_process(
    cluster: Cluster, clients: list[Any]
) -> None:
    a, b, c = clients
    tid = await _thread(a)
    run = await a.runs.create(tid, "counter", input={}, config=params(label="smoke"))
    with anyio.fail_after(WAIT_S):
        output = await b.runs.join(tid, run["run_id"])
    assert output["done"] == "smoke"
    for client in clients:
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "success"
        assert [r["run_id"] for r in await client.runs.list(tid)] == [run["run_id"]]
    assert (await c.threads.get_state(tid))["values"]["done"] == "smoke"
    rows = await executions(cluster.dsn, [run["run_id"]])
    assert len(rows) == 1, f"executed {len(rows)} times: {rows}"
    assert rows[0]["pid"] in {node.pid for node in cluster.nodes}


# --- streams anywhere ---------------------------------------------------------------------

TICKS = 8
HOLD_AT = 4


@pytest.mark.parametrize(
    "roles", [(0, 1, 2), (1, 2, 0), (2, 0, 1)], ids=["A-B-C", "B-C-A", "C-A-B"]
)
async def test_create_here_stream_there_resume_elsewhere_exactly_once(
    cluster: Cluster, clients: list[Any], roles: tuple[int, int, int]
) -> None:
    """Created on X, joined on Y and cut after k events, resumed on Z, for every k up to
    the live edge, all on one live run: each reader gets every event exactly once."""
    creator, streamer, resumer = (clients[i] for i in roles)
    tid = await _thread(creator)
    payload, config, gate = _relay(cluster, "s", n=TICKS, hold_at=HOLD_AT)
    run = await creator.runs.create(
        tid, "relay", input=payload, config=config, stream_mode=["custom"]
    )
    run_id = run["run_id"]
    # The run's events up to its gate: metadata, ticks 1..HOLD_AT, the waiting event.
    before_gate = await read_until(
        streamer.runs.join_stream(tid, run_id, last_event_id="-1"), _waiting
    )
    live_edge = len(before_gate)
    assert live_edge == HOLD_AT + 2, [p.event for p in before_gate]
    assert _ticks(before_gate) == list(range(1, HOLD_AT + 1))

    results: dict[int, list[Any]] = {}
    attached = 0

    async def reader(k: int, gate_open: anyio.Event) -> None:
        nonlocal attached
        head = await collect(streamer.runs.join_stream(tid, run_id, last_event_id="-1"), limit=k)
        assert len(head) == k
        tail_stream = resumer.runs.join_stream(tid, run_id, last_event_id=head[-1].id)
        tail: list[Any] = []
        if not any(_waiting(p) for p in head):
            tail = await read_until(tail_stream, _waiting)
        attached += 1
        await gate_open.wait()
        with anyio.fail_after(WAIT_S):
            tail += await collect(tail_stream)
        results[k] = head + tail

    gate_open = anyio.Event()
    with anyio.fail_after(WAIT_S * 2):
        async with anyio.create_task_group() as group:
            for k in range(1, live_edge + 1):
                group.start_soon(reader, k, gate_open)
            await wait_until(
                lambda: attached == live_edge, within=WAIT_S, what="every reader attached"
            )
            await gate.touch()
            gate_open.set()

    full = await collect(creator.runs.join_stream(tid, run_id, last_event_id="-1"))
    assert full[0].event == "metadata"
    assert full[-1].event == "end", [p.event for p in full]
    assert full[-1].data["status"] == "success", full[-1].data
    assert [p.event for p in full].count("end") == 1
    ids = [int(p.id) for p in full]
    assert ids == list(range(1, len(full) + 1)), f"ids not dense: {ids}"
    assert _ticks(full) == list(range(1, TICKS + 1))
    expected = [part_tuple(p) for p in full]
    for k in range(1, live_edge + 1):
        got = [part_tuple(p) for p in results[k]]
        assert got == expected, f"cut after event {k} on one process, resumed on another"


# --- cancel anywhere ------------------------------------------------------------------------


async def test_cancel_sent_to_another_process_stops_the_run_on_its_owner(
    cluster: Cluster, clients: list[Any]
) -> None:
    a = clients[0]
    tid = await _thread(a)
    held = await _hold(cluster, a, tid, "victim")
    try:
        canceller_node, canceller = _other(cluster, clients, held.owner)
        assert (await canceller.runs.get(tid, held.run_id))["status"] == "running"
        await canceller.runs.cancel(tid, held.run_id)
        parts = await held.rest(cluster)
    finally:
        await held.release()
    assert parts[-1].event == "end", (
        f"cancel on {canceller_node} never reached the owner {held.owner}:\n"
        + cluster.logs_about(held.run_id)
    )
    assert parts[-1].data["status"] == "interrupted", parts[-1].data
    assert _ticks(parts) == [1], "the graph went past its gate although it was never opened"
    for client in clients:
        assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"
    third_node, third = _other(cluster, clients, held.owner, skip=1)
    with anyio.fail_after(WAIT_S):
        after = await third.runs.wait(tid, "counter", input={}, config=params(label="after"))
    assert after["done"] == "after", f"the thread took no new run on {third_node}"
    assert "victim:done" not in (await third.threads.get_state(tid))["values"].get("log", [])


async def test_a_queued_run_cancelled_on_another_process_never_starts(
    cluster: Cluster, clients: list[Any]
) -> None:
    a = clients[0]
    tid = await _thread(a)
    held = await _hold(cluster, a, tid, "holder")
    try:
        _, poster = _other(cluster, clients, held.owner)
        canceller_node, canceller = _other(cluster, clients, held.owner, skip=1)
        queued = await poster.runs.create(tid, "counter", input={}, config=params(label="queued"))
        assert (await canceller.runs.get(tid, queued["run_id"]))["status"] == "pending"
        await canceller.runs.cancel(tid, queued["run_id"])
        assert (await poster.runs.get(tid, queued["run_id"]))["status"] == "interrupted"
        await held.release()
        parts = await held.rest(cluster, queued["run_id"])
    finally:
        await held.release()
    assert parts[-1].data["status"] == "success", parts[-1].data
    # A run queued after the cancelled one runs: the queue moved past it.
    with anyio.fail_after(WAIT_S):
        last = await poster.runs.wait(tid, "counter", input={}, config=params(label="last"))
    assert last["done"] == "last"
    assert await executions(cluster.dsn, [queued["run_id"]]) == [], (
        f"cancelled on {canceller_node} before it started, yet it ran"
    )
    rows = await run_rows(cluster.dsn, [queued["run_id"]])
    assert rows[queued["run_id"]]["status"] == "interrupted"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_a_preempting_run_posted_to_another_process_stops_the_owners_run(
    cluster: Cluster, clients: list[Any], strategy: str
) -> None:
    a = clients[0]
    tid = await _thread(a)
    with anyio.fail_after(WAIT_S):
        await a.runs.wait(tid, "relay", input={"log": ["x:in"]}, config=params(label="x", n=1))
    held = await _hold(cluster, a, tid, "a")
    try:
        poster_node, poster = _other(cluster, clients, held.owner, skip=1)
        run_b = await poster.runs.create(
            tid,
            "relay",
            input={"log": ["b:in"]},
            config=params(label="b", n=1),
            multitask_strategy=strategy,
        )
        parts = await held.rest(cluster, run_b["run_id"])
        with anyio.fail_after(WAIT_S):
            output = await poster.runs.join(tid, run_b["run_id"])
    finally:
        await held.release()
    assert parts[-1].event == "end", (
        f"{strategy} posted to {poster_node} never stopped the run on {held.owner}:\n"
        + cluster.logs_about(held.run_id)
    )
    assert _ticks(parts) == [1], "the pre-empted run went past its gate"
    rows = await wait_terminal(cluster, [held.run_id, run_b["run_id"]], within=WAIT_S, what="runs")
    assert rows[run_b["run_id"]]["status"] == "success"
    if strategy == "interrupt":
        assert parts[-1].data["status"] == "interrupted", parts[-1].data
        assert rows[held.run_id]["status"] == "interrupted"
        assert output["log"] == ["x:in", "x:done", "a:in", "b:in", "b:done"], output["log"]
    else:
        assert output["log"] == ["x:in", "x:done", "b:in", "b:done"], output["log"]
        for client in clients:
            with pytest.raises(NotFoundError):
                await client.runs.get(tid, held.run_id)
