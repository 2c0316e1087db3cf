"""Graphs for the scale-out tests: they say which process ran them, and when.

Every process of a test cluster serves these graphs from one shared folder, so
a run's own events (or a row it writes) tell the test which process executed
it: ownership is observed, never assumed.

A run's parameters come from its config (``config={"configurable": {...}}``),
not from its input: thread state outlives a run, so a parameter passed as
input would be inherited by the thread's next runs (of either graph), and a
run queued behind a held one would wait on its predecessor's gate.

``relay`` (graph id ``relay``): configurable ``label`` L, ``n`` N, ``hold_at``
K (default N), ``gate`` PATH; input ``{"log": [...]}``. The ``relay`` node
emits ``custom`` ``{"tick": i, "pid": P}`` for i in 1..N (P is the executing
process's pid). Right after tick K (K=0: before the first tick) it emits
``{"waiting": L, "pid": P}`` and waits until the file PATH exists, so the run
stays mid-way exactly as long as the test wants. It returns ``{"ticks": N}``
and appends ``"L:done"`` to ``log``. Without ``gate`` it never waits. The wait
is bounded (``GATE_LIMIT_S``): a forgotten gate fails the run instead of
hanging a server.

``counter`` (graph id ``counter``): configurable ``label`` L, ``hold`` S,
``gate`` PATH. The ``count`` node records its execution in the test's own
table (``EXECUTIONS_TABLE`` in the database named by
``SCALEOUT_COUNTER_DSN``): one row per execution with the run id and thread id
from the run's config, the pid, and the database clock at the start and the
end of the node. In between it stays S seconds (default ``DEFAULT_HOLD_S``)
and, with ``gate``, until PATH exists. It returns ``{"done": L}``. The table
has no unique key on ``run_id``: a run executed twice shows up as two rows.
"""

from __future__ import annotations

import asyncio
import operator
import os
import time
from typing import Annotated, Any

import anyio
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

GATE_LIMIT_S = 60.0
GATE_POLL_S = 0.01
DEFAULT_HOLD_S = 0.05
COUNTER_DSN_ENV = "SCALEOUT_COUNTER_DSN"
EXECUTIONS_TABLE = "scaleout_executions"

EXECUTIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {EXECUTIONS_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    label TEXT,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
)
"""


async def _wait_for_gate(path: str) -> None:
    gate = anyio.Path(path)
    deadline = time.monotonic() + GATE_LIMIT_S
    while not await gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        await asyncio.sleep(GATE_POLL_S)


# --- relay ------------------------------------------------------------------------


class RelayState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    ticks: int


def _params(config: RunnableConfig) -> dict[str, Any]:
    return dict(config.get("configurable") or {})


async def relay(state: RelayState, config: RunnableConfig) -> dict[str, Any]:
    writer = get_stream_writer()
    params = _params(config)
    pid = os.getpid()
    label = str(params.get("label", "?"))
    count = int(params.get("n", 3))
    hold_at = int(params.get("hold_at", count))
    gate = params.get("gate")

    async def hold() -> None:
        if gate:
            writer({"waiting": label, "pid": pid})
            await _wait_for_gate(str(gate))

    if hold_at <= 0:
        await hold()
    for index in range(1, count + 1):
        writer({"tick": index, "pid": pid})
        if index == hold_at:
            await hold()
    return {"ticks": count, "log": [f"{label}:done"]}


def _build_relay() -> Any:
    builder = StateGraph(RelayState)
    builder.add_node("relay", relay)
    builder.add_edge(START, "relay")
    builder.add_edge("relay", END)
    return builder.compile(name="relay")


# --- counter ----------------------------------------------------------------------


class CounterState(TypedDict, total=False):
    done: str


_pools: dict[int, Any] = {}


async def _pool() -> Any:
    """One small asyncpg pool per event loop (the server runs every graph on one loop)."""
    import asyncpg

    loop = asyncio.get_running_loop()
    pool = _pools.get(id(loop))
    if pool is None:
        pool = await asyncpg.create_pool(os.environ[COUNTER_DSN_ENV], min_size=0, max_size=3)
        _pools[id(loop)] = pool
    return pool


async def count(state: CounterState, config: RunnableConfig) -> dict[str, Any]:
    params = _params(config)
    run_id = str(params["run_id"])
    thread_id = str(params["thread_id"])
    label = params.get("label")
    pool = await _pool()
    async with pool.acquire() as conn:
        row_id = await conn.fetchval(
            f"INSERT INTO {EXECUTIONS_TABLE} (run_id, thread_id, label, pid, started_at) "
            "VALUES ($1, $2, $3, $4, clock_timestamp()) RETURNING id",
            run_id,
            thread_id,
            label,
            os.getpid(),
        )
    await asyncio.sleep(float(params.get("hold", DEFAULT_HOLD_S)))
    gate = params.get("gate")
    if gate:
        await _wait_for_gate(str(gate))
    async with pool.acquire() as conn:
        await conn.execute(
            f"UPDATE {EXECUTIONS_TABLE} SET finished_at = clock_timestamp() WHERE id = $1",
            row_id,
        )
    return {"done": str(label or run_id)}


def _build_counter() -> Any:
    builder = StateGraph(CounterState)
    builder.add_node("count", count)
    builder.add_edge(START, "count")
    builder.add_edge("count", END)
    return builder.compile(name="counter")


relay_graph = _build_relay()
counter_graph = _build_counter()
