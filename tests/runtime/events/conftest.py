"""The ``store`` fixture: one EventStore per backend, fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runlane.db.engine import create_engine
from runlane.runtime.events import (
    EventStore,
    JsonlEventStore,
    MemoryEventStore,
    NewEvent,
    SqlEventStore,
)

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "jsonl"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """The backend's name and location (a URL, a directory, or None for memory)."""
    # Resolved synchronously: the URL fixtures run their own event loops.
    name: str = request.param
    if name == "memory":
        return name, None
    if name == "jsonl":
        return name, str(tmp_path / "events")
    url: str = request.getfixturevalue(f"{name}_url")
    return name, url


@pytest.fixture
async def store(backend: tuple[str, str | None]) -> AsyncIterator[EventStore]:
    name, where = backend
    if name == "memory":
        yield MemoryEventStore()
        return
    if name == "jsonl":
        assert where is not None
        yield JsonlEventStore(where)
        return
    assert where is not None
    sql = SqlEventStore(create_engine(where), owns_engine=True)
    try:
        yield sql
    finally:
        await sql.close()


def ev(
    thread_id: str = "t-1",
    run_id: str = "r-1",
    event_type: str = "ai_message",
    category: str = "message",
    content: object = "hello",
    *,
    user_id: str | None = None,
    **metadata: object,
) -> NewEvent:
    return NewEvent(
        thread_id=thread_id,
        run_id=run_id,
        event_type=event_type,
        category=category,
        content=content,
        metadata=dict(metadata),
        user_id=user_id,
    )
