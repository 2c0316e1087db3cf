"""What a run was asked to do, and the LangGraph config and input it becomes.

A :class:`RunRequest` is stored as the run's ``kwargs`` (plain JSON), so any
process can execute the run from its row alone. :func:`build_config` is where
the server's identity wins over the request: whatever the request put in
``configurable`` or ``metadata`` under an identity key is replaced, so a
request cannot address another thread's checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, Send

__all__ = [
    "IDENTITY_KEYS",
    "STREAM_MODES",
    "Durability",
    "RunRequest",
    "build_config",
    "build_input",
]

Durability = Literal["sync", "async", "exit"]

STREAM_MODES = frozenset(
    {
        "values",
        "updates",
        "messages-tuple",
        "messages",
        "custom",
        "debug",
        "tasks",
        "checkpoints",
        "events",
    }
)
"""Stream modes a run may request."""

IDENTITY_KEYS = ("thread_id", "checkpoint_ns", "run_id", "assistant_id", "graph_id", "user_id")
"""Keys of ``configurable`` (and ``metadata``) that only the server sets."""


@dataclass(frozen=True)
class RunRequest:
    """A run's request, validated by the HTTP layer and stored as JSON.

    ``checkpoint`` (``{checkpoint_id, checkpoint_map}``) forks from that
    checkpoint; ``temporary`` marks a stateless run whose thread is deleted
    when it ends.
    """

    graph_id: str
    assistant_id: str
    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    stream_mode: list[str] = field(default_factory=lambda: ["values"])
    stream_subgraphs: bool = False
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    checkpoint: dict[str, Any] | None = None
    durability: Durability | None = None
    after_seconds: float = 0
    temporary: bool = False

    def to_kwargs(self) -> dict[str, Any]:
        """The request as a JSON-ready dict (``from_kwargs`` reverses it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> RunRequest:
        """Rebuild a request from stored ``kwargs``; unknown keys raise TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"unknown run request fields: {', '.join(sorted(unknown))}")
        data = dict(kwargs)
        mode = data.get("stream_mode")
        if isinstance(mode, str):
            data["stream_mode"] = [mode]
        return cls(**data)


def build_config(
    request: RunRequest,
    *,
    thread_id: str,
    run_id: str,
    user_id: str | None,
) -> RunnableConfig:
    """The config one run executes with; identity keys always come from the server.

    Keys starting with ``__`` are dropped from ``configurable`` (LangGraph
    keeps its internals there). ``metadata`` carries ``run_id`` too, which
    puts it in every checkpoint the run writes; rollback relies on that.
    """
    raw = dict(request.config or {})
    configurable = {
        key: value
        for key, value in dict(raw.get("configurable") or {}).items()
        if not key.startswith("__")
    }
    identity = {
        "thread_id": thread_id,
        "checkpoint_ns": "",
        "run_id": run_id,
        "assistant_id": request.assistant_id,
        "graph_id": request.graph_id,
        "user_id": user_id,
    }
    configurable.update(identity)
    configurable.pop("checkpoint_id", None)
    configurable.pop("checkpoint_map", None)
    if request.checkpoint:
        if request.checkpoint.get("checkpoint_id"):
            configurable["checkpoint_id"] = request.checkpoint["checkpoint_id"]
        if request.checkpoint.get("checkpoint_map"):
            configurable["checkpoint_map"] = request.checkpoint["checkpoint_map"]
    metadata = dict(raw.get("metadata") or {})
    metadata.update(identity)
    del metadata["checkpoint_ns"]
    config: dict[str, Any] = {
        key: value for key, value in raw.items() if key not in {"configurable", "metadata"}
    }
    config["configurable"] = configurable
    config["metadata"] = metadata
    return cast(RunnableConfig, config)


def _goto(goto: Any) -> Any:
    if isinstance(goto, dict) and "node" in goto:
        return Send(goto["node"], goto.get("input"))
    if isinstance(goto, list):
        return [_goto(item) for item in goto]
    return goto


def build_input(request: RunRequest) -> Any:
    """The graph input: a ``Command`` for ``command`` (resume/update/goto), else ``input``."""
    if request.command is None:
        return request.input
    command = request.command
    kwargs: dict[str, Any] = {}
    if command.get("resume") is not None:
        kwargs["resume"] = command["resume"]
    if command.get("update") is not None:
        update = command["update"]
        # The SDK sends a list of [key, value] pairs as lists; LangGraph wants tuples.
        if isinstance(update, list):
            update = [tuple(item) if isinstance(item, list) else item for item in update]
        kwargs["update"] = update
    if command.get("goto") is not None:
        kwargs["goto"] = _goto(command["goto"])
    return Command(**kwargs)
