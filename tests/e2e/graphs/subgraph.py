"""Test-only graph with a subgraph, so ``stream_subgraphs`` has a namespace to show.

``graph`` (id ``nested``): ``prepare`` -> ``inner`` (a compiled subgraph with
nodes ``shout`` and ``sign``) -> ``finish``. Each node appends a string to
``trail`` and emits a ``custom`` event naming itself, so every stream mode
shows which graph a chunk came from.
"""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class NestedState(TypedDict, total=False):
    text: str
    trail: list[str]  # overwritten, not added: the subgraph hands back the whole trail


def _step(name: str, transform: Any) -> Any:
    def node(state: NestedState) -> dict[str, Any]:
        get_stream_writer()({"node": name})
        return {"text": transform(state.get("text", "")), "trail": [*state.get("trail", []), name]}

    node.__name__ = name
    return node


def _build_inner() -> Any:
    builder = StateGraph(NestedState)
    builder.add_node("shout", _step("shout", str.upper))
    builder.add_node("sign", _step("sign", lambda text: f"{text}!"))
    builder.add_edge(START, "shout")
    builder.add_edge("shout", "sign")
    builder.add_edge("sign", END)
    return builder.compile(name="inner")


def _build_outer() -> Any:
    builder = StateGraph(NestedState)
    builder.add_node("prepare", _step("prepare", str.strip))
    builder.add_node("inner", _build_inner())
    builder.add_node("finish", _step("finish", lambda text: f"<{text}>"))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "inner")
    builder.add_edge("inner", "finish")
    builder.add_edge("finish", END)
    return builder.compile(name="nested")


graph = _build_outer()
