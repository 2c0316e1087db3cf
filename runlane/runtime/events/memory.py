"""MemoryEventStore: the event log of a single process, without a database.

It keeps every guarantee of :mod:`runlane.runtime.events.base` within one
process: each method runs without an ``await`` between reading the thread's
counter and appending, so asyncio tasks cannot interleave inside it. Events
live as long as the process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runlane.runtime.events.base import (
    DEFAULT_MAX_CONTENT_BYTES,
    EventPage,
    EventStore,
    NewEvent,
    is_valid_id,
    prepare,
    select_page,
)

__all__ = ["MemoryEventStore"]

_Row = dict[str, Any]


@dataclass(slots=True)
class _Thread:
    next_seq: int = 1
    events: list[_Row] = field(default_factory=list)  # ascending seq
    messages: list[_Row] = field(default_factory=list)
    runs: dict[str, list[_Row]] = field(default_factory=dict)


def _seq(row: _Row) -> int:
    seq: int = row["seq"]
    return seq


def _copy(row: _Row) -> _Row:
    return copy.deepcopy(row)


def _scoped(user_id: str | None) -> Callable[[_Row], bool]:
    if user_id is None:
        return lambda row: True
    return lambda row: bool(row["user_id"] == user_id)


class MemoryEventStore(EventStore):
    """Events in per-thread lists (all, messages, per run), paged by bisection."""

    def __init__(self, *, max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES) -> None:
        self.max_content_bytes = max_content_bytes
        self._threads: dict[str, _Thread] = {}

    def _append(self, rows: list[_Row]) -> list[_Row]:
        for row in rows:
            thread = self._threads.setdefault(row["thread_id"], _Thread())
            row["seq"] = thread.next_seq
            thread.next_seq += 1
            thread.events.append(row)
            if row["category"] == "message":
                thread.messages.append(row)
            thread.runs.setdefault(row["run_id"], []).append(row)
        return [_copy(row) for row in rows]

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = [prepare(event, self.max_content_bytes, now) for event in events]
        return self._append(rows)

    async def put_if_absent(self, event: NewEvent) -> dict[str, Any] | None:
        row = prepare(event, self.max_content_bytes)
        thread = self._threads.get(event.thread_id)
        if thread is not None and any(
            other["event_type"] == event.event_type for other in thread.runs.get(event.run_id, ())
        ):
            return None
        return self._append([row])[0]

    def _page(
        self,
        rows: Sequence[_Row],
        match: Callable[[_Row], bool],
        limit: int,
        before_seq: int | None,
        after_seq: int | None,
    ) -> EventPage:
        items, has_more = select_page(
            rows, _seq, match, limit=limit, before_seq=before_seq, after_seq=after_seq
        )
        return EventPage([_copy(row) for row in items], has_more)

    async def list_messages(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        thread = self._threads.get(thread_id)
        rows = thread.messages if thread else []
        return self._page(rows, _scoped(user_id), limit, before_seq, after_seq)

    async def list_messages_by_run(
        self,
        thread_id: str,
        run_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        thread = self._threads.get(thread_id)
        rows = thread.runs.get(run_id, []) if thread else []
        scoped = _scoped(user_id)
        return self._page(
            rows,
            lambda row: row["category"] == "message" and scoped(row),
            limit,
            before_seq,
            after_seq,
        )

    async def list_events(
        self,
        thread_id: str,
        run_id: str,
        *,
        event_types: Sequence[str] | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        user_id: str | None = None,
    ) -> EventPage:
        thread = self._threads.get(thread_id)
        rows = thread.runs.get(run_id, []) if thread else []
        scoped = _scoped(user_id)
        types = frozenset(event_types or ())
        return self._page(
            rows,
            lambda row: (not types or row["event_type"] in types) and scoped(row),
            limit,
            None,
            after_seq,
        )

    async def count_messages(
        self, thread_id: str, *, run_id: str | None = None, user_id: str | None = None
    ) -> int:
        thread = self._threads.get(thread_id)
        if thread is None:
            return 0
        scoped = _scoped(user_id)
        return sum(
            1
            for row in thread.messages
            if (run_id is None or row["run_id"] == run_id) and scoped(row)
        )

    async def delete_by_thread(self, thread_id: str) -> int:
        thread = self._threads.pop(thread_id, None) if is_valid_id(thread_id) else None
        return 0 if thread is None else len(thread.events)

    async def delete_by_run(self, thread_id: str, run_id: str) -> int:
        thread = self._threads.get(thread_id)
        if thread is None:
            return 0
        removed = thread.runs.pop(run_id, [])
        if removed:
            thread.events = [row for row in thread.events if row["run_id"] != run_id]
            thread.messages = [row for row in thread.messages if row["run_id"] != run_id]
        return len(removed)
