"""Small helpers shared by the end-to-end tests (no server internals: only what a client sees)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

STREAM_TIMEOUT_S = 20.0


def human(text: str) -> dict[str, Any]:
    """Agent input: one human message."""
    return {"messages": [{"role": "user", "content": text}]}


def agent_answer(text: str) -> str:
    """The example agent's final answer to ``text`` (see runlane/examples/agent.py)."""
    count = len(text.split())
    noun = "word" if count == 1 else "words"
    return f'Your message "{text}" has {count} {noun}.'


AGENT_TOOL_CALL_TEXT = "Let me count the words."


def part_tuple(part: Any) -> tuple[str | None, str, Any]:
    """(id, event, data) of an SDK StreamPart, the unit the exactly-once checks compare."""
    return (part.id, part.event, part.data)


async def collect(stream: AsyncIterator[Any], *, limit: int | None = None) -> list[Any]:
    """Read a stream to its end (or ``limit`` parts), closing it; bounded in time."""
    parts: list[Any] = []
    with anyio.fail_after(STREAM_TIMEOUT_S):
        async with contextlib.aclosing(stream) as opened:  # type: ignore[type-var]
            async for part in opened:
                parts.append(part)
                if limit is not None and len(parts) >= limit:
                    break
    return parts


async def read_until(stream: AsyncIterator[Any], predicate: Any) -> list[Any]:
    """Read parts until ``predicate(part)`` holds; leaves the stream open. Bounded in time."""
    parts: list[Any] = []
    with anyio.fail_after(STREAM_TIMEOUT_S):
        async for part in stream:
            parts.append(part)
            if predicate(part):
                return parts
    raise AssertionError(f"stream ended before the awaited part; got {events(parts)}")


async def first_part(stream: AsyncIterator[Any]) -> Any:
    """Open a stream and return its first part (closing it); bounded in time."""
    with anyio.fail_after(STREAM_TIMEOUT_S):
        async with contextlib.aclosing(stream) as opened:  # type: ignore[type-var]
            return await anext(opened)


def events(parts: list[Any]) -> list[str]:
    return [part.event for part in parts]


def assert_well_formed(parts: list[Any], *, status: str = "success") -> None:
    """The SSE contract every complete run stream obeys (DESIGN.md, "HTTP")."""
    names = events(parts)
    assert parts, "empty stream"
    assert names[0] == "metadata", names
    assert {"run_id", "thread_id", "attempt"} <= set(parts[0].data), parts[0].data
    assert names[-1] == "end", names
    assert parts[-1].data["status"] == status, parts[-1].data
    assert parts[-1].data["run_id"] == parts[0].data["run_id"]
    assert names.count("end") == 1, names
    ids = [part.id for part in parts]
    assert all(ids), f"every data event carries an id: {list(zip(ids, names, strict=True))}"
    assert len(set(ids)) == len(ids), f"duplicate event ids: {ids}"


def gate_input(gates: Path, label: str, *, opened: bool = False) -> tuple[dict[str, Any], Path]:
    """Input for the ``gate`` graph: the run finishes once the returned path exists."""
    path = gates / f"{label}-{uuid.uuid4().hex}"
    if opened:
        path.touch()
    return {"label": label, "gate": str(path), "log": [f"{label}:in"]}, path
