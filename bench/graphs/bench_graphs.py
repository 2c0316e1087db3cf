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
- ``hold``: one async node that waits until the file ``gate`` exists (polled
  every ``poll`` seconds, 0.5 by default, for at most ``hold`` seconds, 300 by
  default), then sends one custom event ``{"i": 0, "t": time.monotonic()}``.
  A run that stays active at almost no CPU cost, for joiners to wait on
  (``bench/scaleout.py``; not in ``langgraph.json``, that script names it).
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


class HoldState(TypedDict, total=False):
    gate: str
    poll: float
    hold: float
    held: float


async def wait_for_gate(state: HoldState) -> dict[str, Any]:
    write = get_stream_writer()
    gate = state.get("gate")
    poll = float(state.get("poll", 0.5))
    limit = float(state.get("hold", 300.0))
    started = time.monotonic()
    for _ in range(max(1, int(limit / poll))):
        if not gate or gate_open(gate):
            break
        await asyncio.sleep(poll)
    write({"i": 0, "t": time.monotonic()})
    return {"held": time.monotonic() - started}


_noop = StateGraph(NoopState).add_node("passthrough", passthrough)
noop = _noop.add_edge(START, "passthrough").add_edge("passthrough", END).compile()

_emit = StateGraph(EmitState).add_node("produce", produce)
emit = _emit.add_edge(START, "produce").add_edge("produce", END).compile()

_hold = StateGraph(HoldState).add_node("wait_for_gate", wait_for_gate)
hold = _hold.add_edge(START, "wait_for_gate").add_edge("wait_for_gate", END).compile()
