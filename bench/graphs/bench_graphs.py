"""The benchmark's graphs, loaded by runlane and by the reference server alike.

- ``noop``: one node that returns its input unchanged (run overhead).
- ``emit``: one async node that sends ``n`` custom events through
  ``get_stream_writer()``, each ``{"i": index, "t": time.monotonic()}`` (the
  producer's timestamp; ``CLOCK_MONOTONIC`` is system-wide on Linux, so the
  client on the same machine can subtract it from its own clock). After each
  event the node yields to the event loop (``await asyncio.sleep(0)``), or
  sleeps ``pace`` seconds when ``pace`` is set. With ``gate`` (a file path) the
  node first waits until that file exists, so joiners can attach before the
  first event (it polls the file every 5 ms, up to 60 s).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class NoopState(TypedDict, total=False):
    x: int


def passthrough(state: NoopState) -> dict[str, Any]:
    return {}


def gate_open(path: str) -> bool:
    return os.path.exists(path)


class EmitState(TypedDict, total=False):
    n: int
    pace: float
    gate: str
    sent: int


async def produce(state: EmitState) -> dict[str, Any]:
    write = get_stream_writer()
    gate = state.get("gate")
    if gate:
        for _ in range(12_000):  # 60 s
            if gate_open(gate):
                break
            await asyncio.sleep(0.005)
    n = int(state.get("n", 0))
    pace = float(state.get("pace", 0.0))
    clock = time.monotonic
    for i in range(n):
        write({"i": i, "t": clock()})
        await asyncio.sleep(pace)
    return {"sent": n}


_noop = StateGraph(NoopState).add_node("passthrough", passthrough)
noop = _noop.add_edge(START, "passthrough").add_edge("passthrough", END).compile()

_emit = StateGraph(EmitState).add_node("produce", produce)
emit = _emit.add_edge(START, "produce").add_edge("produce", END).compile()
