"""MemoryThreadStore: the thread store of a single process without a database.

It gives every guarantee of :mod:`runlane.runtime.threads.base` within one
process: no method awaits between its check and its write, so asyncio tasks
cannot interleave inside it. Threads live as long as the process.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from runlane.exceptions import ThreadExistsError
from runlane.runtime.metadata import check_filter, check_page, contains, json_document
from runlane.runtime.runs.schemas import validate_thread_id
from runlane.runtime.threads.base import (
    THREAD_SORT_KEYS,
    IfExists,
    SortOrder,
    ThreadSortKey,
    ThreadStatus,
    ThreadStore,
    check_sort,
    check_thread_status,
)

__all__ = ["MemoryThreadStore"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _sort_key(thread: dict[str, Any], sort_by: str) -> tuple[Any, str]:
    value = thread[sort_by]
    if sort_by in ("created_at", "updated_at"):
        value = datetime.fromisoformat(value)
    return value, thread["thread_id"]


class MemoryThreadStore(ThreadStore):
    """Threads in a dict, with the same contract as the SQL store."""

    def __init__(self) -> None:
        self._threads: dict[str, dict[str, Any]] = {}

    def _visible(self, thread_id: str, user_id: str | None) -> dict[str, Any] | None:
        thread = self._threads.get(thread_id)
        if thread is None or (user_id is not None and thread["user_id"] != user_id):
            return None
        return thread

    async def create(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        if_exists: IfExists = "raise",
    ) -> dict[str, Any]:
        validate_thread_id(thread_id)
        document = json_document("Thread metadata", metadata)
        existing = self._threads.get(thread_id)
        if existing is not None:
            if if_exists == "raise" or self._visible(thread_id, user_id) is None:
                raise ThreadExistsError(f"Thread {thread_id} already exists.")
            return copy.deepcopy(existing)
        now = _now()
        thread = {
            "thread_id": thread_id,
            "user_id": user_id,
            "status": "idle",
            "metadata": document,
            "created_at": now,
            "updated_at": now,
        }
        self._threads[thread_id] = thread
        return copy.deepcopy(thread)

    async def get(self, thread_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        thread = self._visible(thread_id, user_id)
        return None if thread is None else copy.deepcopy(thread)

    async def update(
        self, thread_id: str, *, metadata: dict[str, Any], user_id: str | None = None
    ) -> dict[str, Any] | None:
        document = json_document("Thread metadata", metadata)
        thread = self._visible(thread_id, user_id)
        if thread is None:
            return None
        thread["metadata"] = {**thread["metadata"], **document}
        thread["updated_at"] = _now()
        return copy.deepcopy(thread)

    async def delete(self, thread_id: str, *, user_id: str | None = None) -> bool:
        if self._visible(thread_id, user_id) is None:
            return False
        del self._threads[thread_id]
        return True

    def _matching(
        self,
        user_id: str | None,
        metadata: dict[str, Any] | None,
        status: str | None,
        ids: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        want = check_filter(metadata)
        if status is not None:
            check_thread_status(status)
        wanted_ids = None if ids is None else set(ids)
        return [
            thread
            for thread in self._threads.values()
            if (user_id is None or thread["user_id"] == user_id)
            and (status is None or thread["status"] == status)
            and (wanted_ids is None or thread["thread_id"] in wanted_ids)
            and (want is None or contains(thread["metadata"], want))
        ]

    async def search(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        ids: list[str] | None = None,
        status: str | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: ThreadSortKey = "created_at",
        sort_order: SortOrder = "desc",
    ) -> list[dict[str, Any]]:
        check_sort(sort_by, sort_order, THREAD_SORT_KEYS)
        check_page(limit, offset)
        threads = self._matching(user_id, metadata, status, ids)
        threads.sort(key=lambda thread: _sort_key(thread, sort_by), reverse=sort_order == "desc")
        return [copy.deepcopy(thread) for thread in threads[offset : offset + limit]]

    async def count(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> int:
        return len(self._matching(user_id, metadata, status))

    async def set_status(self, thread_id: str, status: ThreadStatus) -> bool:
        check_thread_status(status)
        thread = self._threads.get(thread_id)
        if thread is None:
            return False
        thread["status"] = status
        thread["updated_at"] = _now()
        return True
