"""Test-only graphs whose timing the test controls, so races are decided, not slept on.

``gate_graph`` (id ``gate``): input ``{"label": L, "gate": PATH, "log": [...]}``.
The ``hold`` node emits ``custom`` ``{"waiting": L}`` and then waits until the
file ``PATH`` exists (the test creates it to let the run finish), then appends
``"L:done"`` to ``log``. A run therefore stays ``running`` exactly as long as
the test wants. The wait is bounded (``GATE_LIMIT_S``) so a forgotten gate
fails the run instead of hanging the server.

``ticker_graph`` (id ``ticker``): input ``{"n": N, "pause": S}``. The ``tick``
node emits ``custom`` ``{"tick": i}`` for i in 1..N, pausing S seconds between
ticks (a paced stream that is still live while a test cuts it), and returns
``{"ticks": N}``.
"""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any

import anyio
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

GATE_LIMIT_S = 30.0
GATE_POLL_S = 0.01


class GateState(TypedDict, total=False):
    label: str
    gate: str
    log: Annotated[list[str], operator.add]


async def hold(state: GateState) -> dict[str, Any]:
    label = state.get("label", "?")
    get_stream_writer()({"waiting": label})
    gate = anyio.Path(state["gate"])
    deadline = time.monotonic() + GATE_LIMIT_S
    while not await gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        await asyncio.sleep(GATE_POLL_S)
    return {"log": [f"{label}:done"]}


def _build_gate() -> Any:
    builder = StateGraph(GateState)
    builder.add_node("hold", hold)
    builder.add_edge(START, "hold")
    builder.add_edge("hold", END)
    return builder.compile(name="gate")


class TickerState(TypedDict, total=False):
    n: int
    pause: float
    ticks: int


async def tick(state: TickerState) -> dict[str, Any]:
    writer = get_stream_writer()
    count = int(state.get("n", 10))
    pause = float(state.get("pause", 0.0))
    for index in range(1, count + 1):
        writer({"tick": index})
        if pause:
            await asyncio.sleep(pause)
    return {"ticks": count}


def _build_ticker() -> Any:
    builder = StateGraph(TickerState)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_edge("tick", END)
    return builder.compile(name="ticker")


gate_graph = _build_gate()
ticker_graph = _build_ticker()
