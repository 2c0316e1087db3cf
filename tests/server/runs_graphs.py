"""Graphs for the runs route tests, served as ``tests.server.runs_graphs:<name>``.

- ``emit``: writes ``n`` custom events ``{"i": i}`` then sets ``count``.
- ``fail``: raises ``ValueError("boom")``.
- ``gate``: appends ``name`` to ``log``, announces itself on ``ENTERED[name]``
  and waits for ``GATES[name]`` (tests open it), so a run stays ``running``
  exactly as long as a test wants.
"""

from __future__ import annotations

import asyncio
import operator
from collections import defaultdict
from typing import Annotated, Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

GATES: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
ENTERED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
STARTED: list[str] = []


def reset() -> None:
    """Forget every gate (each test has its own event loop)."""
    GATES.clear()
    ENTERED.clear()
    STARTED.clear()


class State(TypedDict, total=False):
    n: int
    count: int
    name: str
    log: Annotated[list[str], operator.add]


def _emit(state: State) -> dict[str, Any]:
    writer = get_stream_writer()
    n = state.get("n", 3)
    for i in range(n):
        writer({"i": i})
    return {"count": n}


def _fail(state: State) -> dict[str, Any]:
    raise ValueError("boom")


async def _gate(state: State) -> dict[str, Any]:
    name = state.get("name", "g")
    STARTED.append(name)
    ENTERED[name].set()
    await GATES[name].wait()
    return {"log": [name]}


def _one_node(name: str, fn: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node(name, fn)
    builder.add_edge(START, name)
    builder.add_edge(name, END)
    return builder.compile()


emit = _one_node("emit", _emit)
fail = _one_node("fail", _fail)
gate = _one_node("gate", _gate)
