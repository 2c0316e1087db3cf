"""JsonlEventStore: the event log as JSON Lines files, for a single process.

Layout under ``directory``: ``<thread_id>/<run_id>.jsonl`` holds one run's
events, one JSON object per line in the order written; ``<thread_id>/.next_seq``
remembers the thread's counter once a run deletion could lower the largest
seq on disk. A batch spanning runs appends to each run's own file, one write
per file.

**One process only.** Seqs and singletons are safe against concurrent tasks
of one process (a lock per thread), not against a second process writing the
same directory. The files are the truth: the first access to a thread reads
all of its files once and keeps an in-memory index (seq, run, type, category,
user, byte offset) of every event; later reads use the index and read only
the lines of the page. The index of every thread touched stays in memory
until the thread is deleted.

Durability: a write returns after the lines reach the operating system (no
fsync), so events survive a crash of the process, not of the machine. A
torn last line left by a crash is cut off on the next start. A batch spanning
runs is written file by file; if a write fails midway, the files written
keep their events (the index is rebuilt from disk on the next access).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from runlane.runtime.events.base import (
    DEFAULT_MAX_CONTENT_BYTES,
    EventPage,
    EventStore,
    NewEvent,
    check_limit,
    is_valid_id,
    prepare,
    select_page,
)

__all__ = ["JsonlEventStore"]

logger = logging.getLogger(__name__)

_Row = dict[str, Any]
_COUNTER = ".next_seq"


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    run_id: str
    event_type: str
    category: str
    user_id: str | None
    offset: int
    length: int


@dataclass(slots=True)
class _Thread:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loaded: bool = False
    next_seq: int = 1
    entries: list[_Entry] = field(default_factory=list)  # ascending seq
    messages: list[_Entry] = field(default_factory=list)
    runs: dict[str, list[_Entry]] = field(default_factory=dict)

    def reset(self, next_seq: int = 1) -> None:
        self.next_seq = next_seq
        self.entries, self.messages, self.runs = [], [], {}

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        if entry.category == "message":
            self.messages.append(entry)
        self.runs.setdefault(entry.run_id, []).append(entry)


def _entry_seq(entry: _Entry) -> int:
    return entry.seq


def _scan_file(path: Path) -> list[_Entry]:
    """The entries of one run file; cuts off a torn last line."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("Cutting a torn last line (%d bytes) off %s", len(data) - end, path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    entries: list[_Entry] = []
    offset = 0
    while offset < end:
        stop = data.index(b"\n", offset) + 1
        try:
            row = orjson.loads(data[offset:stop])
            entries.append(
                _Entry(
                    row["seq"],
                    row["run_id"],
                    row["event_type"],
                    row["category"],
                    row["user_id"],
                    offset,
                    stop - offset,
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("Skipping an unreadable line at byte %d of %s", offset, path)
        offset = stop
    return entries


def _scan_thread(directory: Path) -> tuple[list[_Entry], int]:
    """Every entry of the thread in ascending seq, and its next seq."""
    entries: list[_Entry] = []
    if directory.is_dir():
        for path in directory.glob("*.jsonl"):
            entries.extend(_scan_file(path))
    entries.sort(key=_entry_seq)
    next_seq = entries[-1].seq + 1 if entries else 1
    with contextlib.suppress(FileNotFoundError, ValueError):
        next_seq = max(next_seq, int((directory / _COUNTER).read_text()))
    return entries, next_seq


def _append(path: Path, lines: list[bytes]) -> list[tuple[int, int]]:
    """Append ``lines`` in one write; returns each line's (offset, length)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        offset = handle.tell()
        handle.write(b"".join(lines))
    spans = []
    for line in lines:
        spans.append((offset, len(line)))
        offset += len(line)
    return spans


def _read(directory: Path, entries: Sequence[_Entry]) -> list[_Row]:
    """The rows of ``entries``, in their order, reading each file once."""
    by_run: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        by_run.setdefault(entry.run_id, []).append(index)
    rows: list[_Row | None] = [None] * len(entries)
    for run_id, indexes in by_run.items():
        with (directory / f"{run_id}.jsonl").open("rb") as handle:
            for index in indexes:
                handle.seek(entries[index].offset)
                rows[index] = orjson.loads(handle.read(entries[index].length))
    return [row for row in rows if row is not None]


def _write_counter(directory: Path, next_seq: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f"{_COUNTER}.tmp"
    temporary.write_text(str(next_seq))
    os.replace(temporary, directory / _COUNTER)


class JsonlEventStore(EventStore):
    """Events in JSON Lines files under ``directory``; single process only."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
    ) -> None:
        self.max_content_bytes = max_content_bytes
        self._root = Path(directory)
        self._threads: dict[str, _Thread] = {}

    def _dir(self, thread_id: str) -> Path:
        return self._root / thread_id

    async def _loaded(self, thread_id: str) -> _Thread:
        """The thread's index, read from disk on first use. Call under its lock."""
        thread = self._threads[thread_id]
        if not thread.loaded:
            entries, next_seq = await asyncio.to_thread(_scan_thread, self._dir(thread_id))
            thread.reset(next_seq)
            for entry in entries:
                thread.add(entry)
            thread.loaded = True
        return thread

    @contextlib.asynccontextmanager
    async def _locked(self, thread_ids: Iterable[str]) -> AsyncIterator[None]:
        # In sorted order, so two batches spanning the same threads cannot deadlock.
        async with contextlib.AsyncExitStack() as stack:
            for thread_id in sorted(set(thread_ids)):
                thread = self._threads.setdefault(thread_id, _Thread())
                await stack.enter_async_context(thread.lock)
            yield

    # --- writes -------------------------------------------------------------

    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = [prepare(event, self.max_content_bytes, now) for event in events]
        async with self._locked(row["thread_id"] for row in rows):
            await self._write(rows)
        return rows

    async def put_if_absent(self, event: NewEvent) -> dict[str, Any] | None:
        row = prepare(event, self.max_content_bytes)
        async with self._locked([event.thread_id]):
            thread = await self._loaded(event.thread_id)
            if any(e.event_type == event.event_type for e in thread.runs.get(event.run_id, ())):
                return None
            await self._write([row])
        return row

    async def _write(self, rows: list[_Row]) -> None:
        """Number and append ``rows``; the caller holds the locks of their threads."""
        threads = {row["thread_id"]: await self._loaded(row["thread_id"]) for row in rows}
        start = {thread_id: thread.next_seq for thread_id, thread in threads.items()}
        files: dict[tuple[str, str], list[_Row]] = {}
        for row in rows:
            thread = threads[row["thread_id"]]
            row["seq"] = thread.next_seq
            thread.next_seq += 1
            files.setdefault((row["thread_id"], row["run_id"]), []).append(row)
        spans: dict[int, tuple[int, int]] = {}
        try:
            for (thread_id, run_id), group in files.items():
                lines = [orjson.dumps(row) + b"\n" for row in group]
                path = self._dir(thread_id) / f"{run_id}.jsonl"
                written = await asyncio.to_thread(_append, path, lines)
                spans.update(zip((id(row) for row in group), written, strict=True))
        except BaseException:
            for thread_id, thread in threads.items():
                thread.loaded = False  # rebuild from what reached the disk
                thread.next_seq = start[thread_id]
            raise
        for row in rows:  # in input order, which is ascending seq per thread
            offset, length = spans[id(row)]
            threads[row["thread_id"]].add(
                _Entry(
                    row["seq"],
                    row["run_id"],
                    row["event_type"],
                    row["category"],
                    row["user_id"],
                    offset,
                    length,
                )
            )

    # --- reads --------------------------------------------------------------

    async def _page(
        self,
        thread_id: str,
        pick: Callable[[_Thread], Sequence[_Entry]],
        match: Callable[[_Entry], bool],
        user_id: str | None,
        limit: int,
        before_seq: int | None,
        after_seq: int | None,
    ) -> EventPage:
        def matches(entry: _Entry) -> bool:
            return (user_id is None or entry.user_id == user_id) and match(entry)

        check_limit(limit)
        if not is_valid_id(thread_id):
            return EventPage([], False)
        async with self._locked([thread_id]):
            thread = await self._loaded(thread_id)
            entries, has_more = select_page(
                pick(thread),
                _entry_seq,
                matches,
                limit=limit,
                before_seq=before_seq,
                after_seq=after_seq,
            )
            rows = await asyncio.to_thread(_read, self._dir(thread_id), entries)
        return EventPage(rows, has_more)

    async def list_messages(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        return await self._page(
            thread_id, lambda t: t.messages, lambda e: True, user_id, limit, before_seq, after_seq
        )

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
        return await self._page(
            thread_id,
            lambda t: t.runs.get(run_id, []),
            lambda e: e.category == "message",
            user_id,
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
        types = frozenset(event_types or ())
        return await self._page(
            thread_id,
            lambda t: t.runs.get(run_id, []),
            lambda e: not types or e.event_type in types,
            user_id,
            limit,
            None,
            after_seq,
        )

    async def count_messages(
        self, thread_id: str, *, run_id: str | None = None, user_id: str | None = None
    ) -> int:
        if not is_valid_id(thread_id):
            return 0
        async with self._locked([thread_id]):
            thread = await self._loaded(thread_id)
            return sum(
                1
                for entry in thread.messages
                if (run_id is None or entry.run_id == run_id)
                and (user_id is None or entry.user_id == user_id)
            )

    # --- deletes ------------------------------------------------------------

    async def delete_by_thread(self, thread_id: str) -> int:
        if not is_valid_id(thread_id):
            return 0
        async with self._locked([thread_id]):
            thread = await self._loaded(thread_id)
            count = len(thread.entries)
            await asyncio.to_thread(shutil.rmtree, self._dir(thread_id), True)
            thread.reset()
        return count

    async def delete_by_run(self, thread_id: str, run_id: str) -> int:
        if not (is_valid_id(thread_id) and is_valid_id(run_id)):
            return 0
        async with self._locked([thread_id]):
            thread = await self._loaded(thread_id)
            removed = thread.runs.get(run_id, [])
            if not removed:
                return 0
            directory = self._dir(thread_id)
            # Remember the counter first: the largest seq may be in this file.
            await asyncio.to_thread(_write_counter, directory, thread.next_seq)
            await asyncio.to_thread((directory / f"{run_id}.jsonl").unlink, True)
            del thread.runs[run_id]
            thread.entries = [e for e in thread.entries if e.run_id != run_id]
            thread.messages = [e for e in thread.messages if e.run_id != run_id]
        return len(removed)
