"""A process that dies or is stopped loses no run silently (a fresh cluster per test).

- ``kill -9`` of the process executing a run: its peers claim the expired
  lease and end the run ``error`` with ``stop_reason="orphan_recovered"``;
  every client streaming it from a peer gets the terminal ``end`` (and a
  replay ends the same way); the run queued behind it runs on a peer; the
  thread takes new runs.
- SIGTERM with 20 streaming runs: the stopping process stops taking work
  (its ``/ok`` no longer answers 200, and the queued runs behind its runs are
  executed by peers), lets the runs that can finish within
  ``RUNLANE_SHUTDOWN_GRACE`` finish ``success``, interrupts the rest
  (``interrupted``, durably, each of their streams ends with ``end``), sends
  its SSE clients of other processes' runs a ``retry:`` hint and closes them,
  so they resume on a peer and get every event exactly once; it exits 0, and
  no client hangs.

Which process executes a run is observed (the ``relay`` graph reports its
pid), never assumed; the process killed or stopped is one that owns runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.scaleout.cluster import (
    LEASE_TTL_S,
    SWEEP_INTERVAL_S,
    Cluster,
    Node,
    SseRead,
    assert_dense_ids,
    diagnose,
    executions,
    frame_tuples,
    params,
    read_sse,
    run_rows,
    sdk_clients,
    stream_path,
    wait_terminal,
    wait_until,
)

pytestmark = pytest.mark.anyio

GRACE_S = 8.0
CLUSTER_ENV = {"RUNLANE_SHUTDOWN_GRACE": str(GRACE_S)}
STREAMS = 20
TICKS = 3
HOLD_AT = 2
WAIT_S = 30.0
RECOVERY_S = LEASE_TTL_S + SWEEP_INTERVAL_S + 20.0
"""Deadline for orphan recovery: lease + sweep interval, plus generous slack."""


def _relay_body(label: str, gate: Path) -> dict[str, Any]:
    return {
        "assistant_id": "relay",
        "input": {"log": [f"{label}:in"]},
        "config": params(label=label, n=TICKS, hold_at=HOLD_AT, gate=str(gate)),
        "stream_mode": ["custom"],
        "on_disconnect": "continue",
    }


def _ticks(read: SseRead | list[Any]) -> list[int]:
    frames = read.frames if isinstance(read, SseRead) else read
    return [f.data["tick"] for f in frames if f.event == "custom" and "tick" in f.data]


def _client_of(cluster: Cluster, sdks: list[Any], node: Node) -> Any:
    return sdks[cluster.nodes.index(node)]


async def _answers_ok(node: Node) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            response = await http.get(f"{node.url}/ok")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


# --- kill -9 ----------------------------------------------------------------------------


async def test_kill_9_mid_run_is_recovered_by_a_peer_and_the_thread_moves_on(
    fresh_cluster: Cluster,
) -> None:
    cluster = fresh_cluster
    a = cluster.nodes[0]
    async with sdk_clients(cluster) as sdks, anyio.create_task_group() as group:
        tid = str((await sdks[0].threads.create())["thread_id"])
        gate = cluster.gate("doomed")  # never opened: the run is mid-way when its owner dies
        with anyio.fail_after(WAIT_S):
            head = await read_sse(
                a,
                "POST",
                f"/threads/{tid}/runs/stream",
                body=_relay_body("doomed", gate),
                until=lambda r: r.waiting_pid() is not None,
            )
        assert head.frames[0].event == "metadata", head.frames
        run_id = head.frames[0].data["run_id"]
        owner = cluster.node_of_pid(head.waiting_pid() or 0)
        survivors = cluster.others(owner)

        joiners = [SseRead(node=node) for node in survivors]
        for joiner in joiners:
            group.start_soon(
                functools.partial(
                    read_sse,
                    joiner.node,
                    "GET",
                    stream_path(tid, run_id),
                    last_event_id="-1",
                    read=joiner,
                )
            )
        await wait_until(
            lambda: all(j.waiting_pid() for j in joiners), within=WAIT_S, what="joiners live"
        )
        queued = await _client_of(cluster, sdks, survivors[0]).runs.create(
            tid, "counter", input={}, config=params(label="queued")
        )
        rows = await run_rows(cluster.dsn, [run_id, queued["run_id"]])
        assert rows[run_id]["status"] == "running"
        assert rows[queued["run_id"]]["status"] == "pending"

        owner.kill()

        rows = await wait_terminal(
            cluster, [run_id], within=RECOVERY_S, what=f"run {run_id} of killed {owner}"
        )
        row = rows[run_id]
        assert (row["status"], row["stop_reason"]) == ("error", "orphan_recovered"), (
            f"{row}\n{await diagnose(cluster, [run_id])}"
        )

        await wait_until(
            lambda: all(j.closed for j in joiners),
            within=WAIT_S,
            what="the peers' streams of the recovered run to end",
            detail=lambda: str([(j.node.name, [f.event for f in j.frames]) for j in joiners]),
        )
        replay = await read_sse(survivors[1], "GET", stream_path(tid, run_id), last_event_id="-1")
        for read in [*joiners, replay]:
            where = f"stream of the recovered run on {read.node}"
            assert read.end is not None, f"{where} closed without a terminal entry: {read}"
            assert read.end.data["status"] == "error", f"{where}: {read.end}"
            assert [f.event for f in read.frames].count("end") == 1, where
            assert_dense_ids(read.frames, where)
            assert _ticks(read) == list(range(1, HOLD_AT + 1)), where
            assert frame_tuples(read.frames) == frame_tuples(replay.frames), where

        rows = await wait_terminal(
            cluster, [queued["run_id"]], within=WAIT_S, what="the run queued behind it"
        )
        assert rows[queued["run_id"]]["status"] == "success", rows
        done = await executions(cluster.dsn, [queued["run_id"]])
        assert len(done) == 1, done
        assert done[0]["pid"] in {node.pid for node in survivors}

        after_client = _client_of(cluster, sdks, survivors[1])
        with anyio.fail_after(WAIT_S):
            after = await after_client.runs.wait(
                tid, "counter", input={}, config=params(label="after")
            )
        assert after["done"] == "after"

        async def idle() -> bool:
            thread = await _client_of(cluster, sdks, survivors[0]).threads.get(tid)
            return bool(thread["status"] == "idle")

        await wait_until(idle, within=WAIT_S, what="the thread to be idle")


# --- SIGTERM ----------------------------------------------------------------------------


@dataclass
class Tracked:
    index: int
    tid: str
    gate: Path
    creator: Node
    created: SseRead
    run_id: str = ""
    owner: Node | None = None
    joined: SseRead | None = None
    """A join, from the start, on the stopped process (for runs it does not own)."""
    resumed: SseRead | None = None
    """The stream the stopped process closed, resumed on the run's owner."""

    @property
    def label(self) -> str:
        return f"r{self.index}"


async def test_sigterm_with_20_streaming_runs_loses_none_and_hangs_no_client(
    fresh_cluster: Cluster,
) -> None:
    cluster = fresh_cluster
    with anyio.fail_after(GRACE_S + 4 * WAIT_S):
        async with sdk_clients(cluster) as sdks, anyio.create_task_group() as group:
            await _sigterm_scenario(cluster, sdks, group)


async def _sigterm_scenario(cluster: Cluster, sdks: list[Any], group: Any) -> None:
    size = len(cluster.nodes)
    tracked: list[Tracked] = []
    for i in range(STREAMS):
        creator = cluster.nodes[i % size]
        tid = str((await sdks[i % size].threads.create())["thread_id"])
        item = Tracked(i, tid, cluster.gate(f"r{i}"), creator, SseRead(node=creator))
        tracked.append(item)
        group.start_soon(
            functools.partial(
                read_sse,
                creator,
                "POST",
                f"/threads/{tid}/runs/stream",
                body=_relay_body(item.label, item.gate),
                read=item.created,
            )
        )
    await wait_until(
        lambda: all(t.created.waiting_pid() for t in tracked),
        within=WAIT_S,
        what="all 20 runs to be mid-way",
    )
    for t in tracked:
        assert t.created.frames[0].event == "metadata", t.created.frames
        t.run_id = t.created.frames[0].data["run_id"]
        t.owner = cluster.node_of_pid(t.created.waiting_pid() or 0)

    owned = {node.name: [t for t in tracked if t.owner is node] for node in cluster.nodes}
    victim = max(cluster.nodes, key=lambda node: len(owned[node.name]))
    mine = owned[victim.name]
    assert len(mine) >= 2, f"runs per process: { {k: len(v) for k, v in owned.items()} }"
    finishing, stuck = mine[0::2], mine[1::2]
    foreign = [t for t in tracked if t.owner is not victim]

    # The stopping process also serves streams of its peers' runs.
    for t in foreign:
        if t.creator is not victim:
            t.joined = SseRead(node=victim)
            group.start_soon(
                functools.partial(
                    read_sse,
                    victim,
                    "GET",
                    stream_path(t.tid, t.run_id),
                    last_event_id="-1",
                    read=t.joined,
                )
            )
    await wait_until(
        lambda: all(t.joined.waiting_pid() for t in foreign if t.joined),
        within=WAIT_S,
        what="joins on the process to be stopped",
    )
    # Work it holds the lanes for: queued behind a run that will finish, and one that won't.
    victim_sdk = _client_of(cluster, sdks, victim)
    queued = {
        "behind-finishing": await victim_sdk.runs.create(
            finishing[0].tid, "counter", input={}, config=params(label="behind-finishing")
        ),
        "behind-stuck": await victim_sdk.runs.create(
            stuck[0].tid, "counter", input={}, config=params(label="behind-stuck")
        ),
    }
    queued_ids = [run["run_id"] for run in queued.values()]
    rows = await run_rows(cluster.dsn, queued_ids)
    assert {rows[r]["status"] for r in queued_ids} == {"pending"}, rows

    victim.terminate()
    await wait_until(
        lambda: _not(_answers_ok(victim)),
        within=GRACE_S + WAIT_S,
        what=f"{victim} to stop answering GET /ok after SIGTERM",
    )
    for t in finishing:
        await anyio.Path(t.gate).touch()

    await wait_until(
        lambda: not victim.alive(),
        within=GRACE_S + WAIT_S,
        what=f"{victim} to exit after SIGTERM (grace {GRACE_S}s)",
        detail=victim.log_tail,
    )
    code = victim.process.returncode
    victim_reads = [t.created for t in tracked if t.creator is victim]
    victim_reads += [t.joined for t in tracked if t.joined is not None]
    await wait_until(
        lambda: all(read.closed for read in victim_reads),
        within=WAIT_S,
        what="every SSE connection to the stopped process to close",
    )
    problems: list[str] = []
    if code != 0:
        problems.append(f"{victim} exited with {code} after SIGTERM")
    problems += [f"{victim} logged: {line[:600]}" for line in victim.error_lines()[:10]]

    # Streams of its peers' runs: a retry hint, closed without an end; resumed on the owner.
    for t in foreign:
        read = t.created if t.creator is victim else t.joined
        assert read is not None
        assert t.owner is not None
        if read.ended:
            problems.append(f"{t.label}: {victim} sent `end` on a stream of {t.owner}'s run")
        if not read.retry:
            problems.append(
                f"{t.label}: {victim} closed a stream of {t.owner}'s run without a retry: hint "
                f"({read.transport_error or 'clean close'}; last event {read.last_id})"
            )
        t.resumed = SseRead(node=t.owner)
        group.start_soon(
            functools.partial(
                read_sse,
                t.owner,
                "GET",
                stream_path(t.tid, t.run_id),
                last_event_id=read.last_id or "-1",
                read=t.resumed,
            )
        )
    for t in tracked:
        await anyio.Path(t.gate).touch()

    other_reads = [t.created for t in tracked if t.creator is not victim]
    other_reads += [t.resumed for t in tracked if t.resumed is not None]
    await wait_until(
        lambda: all(read.closed for read in other_reads),
        within=WAIT_S,
        what="every client stream to end",
        detail=lambda: str(
            [(r.node.name, [f.event for f in r.frames][-3:]) for r in other_reads if not r.closed]
        ),
    )

    final = await wait_terminal(
        cluster, [t.run_id for t in tracked] + queued_ids, within=WAIT_S, what="every run"
    )
    for t in tracked:
        expected = "interrupted" if t in stuck else "success"
        views = _client_views(t, victim)
        status = final[t.run_id]["status"]
        if status != expected:
            problems.append(f"{t.label} (owner {t.owner}): status {status}, expected {expected}")
        for where, frames in views.items():
            names = [f.event for f in frames]
            if names.count("end") != 1 or names[-1] != "end":
                problems.append(f"{t.label} via {where}: no single final end: {names}")
                continue
            if frames[-1].data.get("status") != expected:
                problems.append(f"{t.label} via {where}: end {frames[-1].data}, want {expected}")
            want_ticks = list(range(1, (HOLD_AT if expected == "interrupted" else TICKS) + 1))
            if _ticks(frames) != want_ticks:
                problems.append(f"{t.label} via {where}: ticks {_ticks(frames)}")
            try:
                assert_dense_ids(frames, f"{t.label} via {where}")
            except AssertionError as exc:
                problems.append(str(exc))
        tuples = {where: frame_tuples(frames) for where, frames in views.items()}
        if len({repr(v) for v in tuples.values()}) > 1:
            problems.append(f"{t.label}: clients saw different streams: {tuples}")

    for name, run in queued.items():
        row = final[run["run_id"]]
        done = await executions(cluster.dsn, [run["run_id"]])
        if row["status"] != "success" or len(done) != 1:
            problems.append(f"queued {name}: status {row['status']}, executions {done}")
        elif done[0]["pid"] == victim.pid:
            problems.append(f"queued {name}: the stopping process {victim} claimed it")
    if problems:
        report = await diagnose(cluster, [t.run_id for t in mine] + queued_ids)
        raise AssertionError("\n".join(problems) + "\n\n" + report)


async def _not(check: Any) -> bool:
    return not await check


def _client_views(t: Tracked, victim: Node) -> dict[str, list[Any]]:
    """Every client's complete view of run ``t``: (where -> frames, resumes concatenated)."""
    views: dict[str, list[Any]] = {}
    first = t.created.frames
    if t.creator is victim and t.owner is not victim:
        first = first + (t.resumed.frames if t.resumed else [])
    views[f"created on {t.creator.name}"] = first
    if t.joined is not None:
        joined = t.joined.frames + (t.resumed.frames if t.resumed else [])
        views[f"joined on {victim.name}, resumed on {t.owner.name if t.owner else '?'}"] = joined
    return views
