"""Helpers for the graphs tests: a tiny graph's source and process-state hygiene."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

#: A module defining every shape of graph attribute the registry accepts.
GRAPH_SOURCE = """
from contextlib import asynccontextmanager

from typing_extensions import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    n: int


def _builder(step=1):
    def inc(state):
        return {"n": state["n"] + step}

    builder = StateGraph(State)
    builder.add_node("inc", inc)
    builder.add_edge(START, "inc")
    builder.add_edge("inc", END)
    return builder


builder = _builder()
graph = builder.compile()


def factory(config):
    return _builder(config.get("configurable", {}).get("step", 10)).compile()


async def async_factory():
    return _builder(100)


@asynccontextmanager
async def managed(config):
    yield _builder(1000).compile()


not_a_graph = 42
"""


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """Undo what loading a config does to ``os.environ``, ``sys.path`` and ``sys.modules``."""
    environ = dict(os.environ)
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith(("_runlane_graph_", "rl_test_pkg")):
            del sys.modules[name]
