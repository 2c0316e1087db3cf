"""Dispatch: queued runs are claimed by any process, once each, one at a time per thread, in order.

300 runs over 30 threads, posted round-robin to the three processes (run i of
the whole sequence goes to process i mod 3), every one with the ``enqueue``
strategy. The first run of every thread holds a shared gate, so the other 270
are certainly queued, most of them on a process that does not hold their
thread's lane, before any of them may start. Then the gate opens and the
cluster must drain the queues.

The ``counter`` graph writes one row per execution (run id, thread id, pid,
database-clock start and end) into a table the servers know nothing about, so:

- exactly once: every run id has exactly one execution row, and every run
  ends ``success``;
- order: per thread, executions start in creation order;
- one at a time: per thread, an execution starts only after the previous one
  finished (the intervals do not overlap; each execution holds
  ``HOLD_S`` seconds, so an overlap would be visible).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import anyio
import pytest

from tests.scaleout.cluster import (
    Cluster,
    executions,
    params,
    run_rows,
    wait_terminal,
    wait_until,
)

pytestmark = pytest.mark.anyio

THREADS = 30
RUNS_PER_THREAD = 10
HOLD_S = 0.05
GATHER_S = 60.0
DRAIN_S = 60.0


async def test_300_enqueued_runs_over_30_threads_run_once_each_in_order_one_at_a_time(
    cluster: Cluster, clients: list[Any]
) -> None:
    gate = cluster.gate("first-runs")
    tids = [
        str((await clients[t % len(clients)].threads.create())["thread_id"]) for t in range(THREADS)
    ]
    created: dict[str, list[str]] = {tid: [] for tid in tids}  # creation order per thread
    posted_to: dict[str, int] = {}

    async def post_thread(t: int) -> None:
        tid = tids[t]
        for j in range(RUNS_PER_THREAD):
            index = t * RUNS_PER_THREAD + j
            node = index % len(clients)
            config = params(label=f"t{t}-r{j}", hold=HOLD_S, gate=str(gate) if j == 0 else None)
            run = await clients[node].runs.create(
                tid, "counter", input={}, config=config, multitask_strategy="enqueue"
            )
            created[tid].append(run["run_id"])
            posted_to[run["run_id"]] = node

    with anyio.fail_after(GATHER_S):
        async with anyio.create_task_group() as group:
            for t in range(THREADS):
                group.start_soon(post_thread, t)
    all_runs = [run_id for tid in tids for run_id in created[tid]]
    assert len(set(all_runs)) == THREADS * RUNS_PER_THREAD
    first_runs = {created[tid][0] for tid in tids}

    # Every thread's first run is executing (held by the gate); nothing else has started.
    await wait_until(
        lambda: _count_executions(cluster, list(first_runs)),
        within=GATHER_S,
        what="every thread's first run to start",
    )
    early = await executions(cluster.dsn)
    assert {row["run_id"] for row in early} == first_runs, (
        "a queued run started while its thread was busy: "
        f"{[r['label'] for r in early if r['run_id'] not in first_runs]}"
    )
    rows = await run_rows(cluster.dsn, all_runs)
    waiting = [r for r in all_runs if r not in first_runs]
    not_pending = {r: rows[r]["status"] for r in waiting if rows[r]["status"] != "pending"}
    assert not not_pending, f"queued runs not pending behind the held ones: {not_pending}"

    await anyio.Path(gate).touch()
    try:
        final = await wait_terminal(cluster, all_runs, within=DRAIN_S, what="all 300 runs to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await _where(cluster, all_runs, posted_to)}") from None

    statuses = Counter(final[r]["status"] for r in all_runs)
    assert statuses == {"success": len(all_runs)}, f"final statuses: {dict(statuses)}"

    done = await executions(cluster.dsn, all_runs)
    counts = Counter(row["run_id"] for row in done)
    twice = {r: n for r, n in counts.items() if n > 1}
    never = [r for r in all_runs if r not in counts]
    assert not twice, f"{len(twice)} runs executed more than once: {twice}"
    assert not never, f"{len(never)} runs never executed although they ended success"
    assert all(row["finished_at"] is not None for row in done)

    by_thread: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in done:
        by_thread[row["thread_id"]].append(row)
    pids = {node.pid for node in cluster.nodes}
    for tid in tids:
        rows_t = sorted(by_thread[tid], key=lambda r: (r["started_at"], r["id"]))
        order = [r["run_id"] for r in rows_t]
        assert order == created[tid], (
            f"thread {tid}: executed in the order {[_label(rows_t, r) for r in order]}, "
            f"created as {[_label(rows_t, r) for r in created[tid]]}"
        )
        for before, after in itertools.pairwise(rows_t):
            assert before["finished_at"] <= after["started_at"], (
                f"thread {tid}: {after['label']} (pid {after['pid']}) started at "
                f"{after['started_at']} while {before['label']} (pid {before['pid']}) was "
                f"still running until {before['finished_at']}"
            )
        assert {r["pid"] for r in rows_t} <= pids
    executors = Counter(row["pid"] for row in done)
    assert len(executors) >= 2, f"every run executed on one process: {executors}"


async def _count_executions(cluster: Cluster, run_ids: list[str]) -> bool:
    return len({row["run_id"] for row in await executions(cluster.dsn, run_ids)}) == len(run_ids)


async def _where(cluster: Cluster, run_ids: list[str], posted_to: dict[str, int]) -> str:
    """For each run not terminal: its status, the process it was posted to, the one that ran it."""
    rows = await run_rows(cluster.dsn, run_ids)
    ran = {row["run_id"]: row for row in await executions(cluster.dsn, run_ids)}
    names = {node.pid: node.name for node in cluster.nodes}
    lines = []
    for run_id in run_ids:
        status = rows[run_id]["status"]
        if status in {"pending", "running"}:
            execution = ran.get(run_id)
            by = "not executed"
            if execution is not None:
                done = "finished" if execution["finished_at"] else "unfinished"
                by = f"executed on {names.get(execution['pid'], execution['pid'])} ({done})"
            poster = cluster.nodes[posted_to[run_id]].name
            lines.append(f"  {run_id}: {status}, posted to {poster}, {by}")
    return "runs not terminal:\n" + "\n".join(lines)


def _label(rows: list[dict[str, Any]], run_id: str) -> str:
    for row in rows:
        if row["run_id"] == run_id:
            return str(row["label"])
    return run_id[:8]
