"""The thread store: which threads exist, whose they are, and their status.

A thread is a plain ``dict`` with the keys of :data:`THREAD_FIELDS`:
``thread_id``, ``user_id``, ``status`` (one of :data:`THREAD_STATUSES`),
``metadata`` (a JSON object) and ``created_at`` / ``updated_at`` (ISO-8601
strings in UTC, with their ``+00:00`` offset). A thread's state (its values
and checkpoints) is not here: it lives in the LangGraph checkpointer.

Guarantees every backend gives (``tests/runtime/test_thread_store_contract.py``
checks each one on memory, SQLite and Postgres):

- **Validation before writing.** A malformed thread id, an unknown status or
  metadata that JSON cannot hold raise a
  :class:`~runlane.exceptions.InvalidInputError` subclass and write nothing.
- **User scoping.** Methods taking ``user_id`` see only that user's threads
  when it is given (another user's thread reads as missing); ``None`` means an
  unscoped, internal call.
- **Metadata.** :meth:`ThreadStore.update` merges the given keys into the
  stored object (top level; a given key replaces its whole value) in one
  atomic step. Filters use containment (:mod:`runlane.runtime.metadata`).
- **Ordering.** :meth:`ThreadStore.search` sorts by ``sort_by`` and breaks
  ties by ``thread_id`` in the same direction, so ``asc`` is exactly the
  reverse of ``desc`` and pages never overlap.
- Every write that changes a thread sets its ``updated_at``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, Literal, get_args

from runlane.exceptions import InvalidInputError, InvalidThreadStatusError

__all__ = [
    "THREAD_FIELDS",
    "THREAD_SORT_KEYS",
    "THREAD_STATUSES",
    "IfExists",
    "SortOrder",
    "ThreadSortKey",
    "ThreadStatus",
    "ThreadStore",
    "check_sort",
    "check_thread_status",
]

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
ThreadSortKey = Literal["thread_id", "status", "created_at", "updated_at"]
SortOrder = Literal["asc", "desc"]
IfExists = Literal["raise", "do_nothing"]

THREAD_FIELDS = ("thread_id", "user_id", "status", "metadata", "created_at", "updated_at")
"""Keys of every thread a store returns, in this order."""
THREAD_STATUSES: tuple[str, ...] = get_args(ThreadStatus)
THREAD_SORT_KEYS: tuple[str, ...] = get_args(ThreadSortKey)


def check_thread_status(status: object) -> str:
    """``status`` if it is a thread status, else InvalidThreadStatusError."""
    if not isinstance(status, str) or status not in THREAD_STATUSES:
        raise InvalidThreadStatusError(
            f"Unknown thread status {status!r}: use {', '.join(THREAD_STATUSES)}."
        )
    return status


def check_sort(sort_by: object, sort_order: object, keys: tuple[str, ...]) -> None:
    """InvalidInputError unless ``sort_by`` is one of ``keys`` and the order asc/desc."""
    if sort_by not in keys:
        raise InvalidInputError(f"Cannot sort by {sort_by!r}: use {', '.join(keys)}.")
    if sort_order not in ("asc", "desc"):
        raise InvalidInputError(f"Unknown sort order {sort_order!r}: use asc or desc.")


class ThreadStore(abc.ABC):
    """Durable storage of threads. See the module docstring for guarantees."""

    @abc.abstractmethod
    async def create(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        if_exists: IfExists = "raise",
    ) -> dict[str, Any]:
        """Insert an ``idle`` thread and return it.

        If ``thread_id`` exists: ``if_exists="raise"`` raises
        :class:`~runlane.exceptions.ThreadExistsError`; ``"do_nothing"``
        returns the existing thread unchanged, unless it belongs to another
        user than ``user_id`` (then ThreadExistsError too). Raises
        InvalidThreadIdError for a malformed id and InvalidPayloadError for
        metadata JSON cannot hold.
        """

    @abc.abstractmethod
    async def get(self, thread_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """The thread, or None (also when it belongs to another user)."""

    @abc.abstractmethod
    async def update(
        self, thread_id: str, *, metadata: dict[str, Any], user_id: str | None = None
    ) -> dict[str, Any] | None:
        """Merge ``metadata`` into the thread's; the updated thread, or None if missing."""

    @abc.abstractmethod
    async def delete(self, thread_id: str, *, user_id: str | None = None) -> bool:
        """Remove the thread; False if there was none (or it is another user's)."""

    @abc.abstractmethod
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
        """Threads matching every given filter, sorted, one page of them.

        ``metadata`` matches by containment, ``ids`` restricts to those ids
        (an empty list matches nothing). Raises InvalidInputError for an
        unknown status, sort key or order, or a negative limit or offset.
        """

    @abc.abstractmethod
    async def count(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> int:
        """How many threads :meth:`search` with the same filters would find in all."""

    @abc.abstractmethod
    async def set_status(self, thread_id: str, status: ThreadStatus) -> bool:
        """Set the thread's status; False if the thread is missing.

        An unknown status raises InvalidThreadStatusError and writes nothing.
        """

    async def settle_status(
        self,
        thread_id: str,
        status: ThreadStatus,
        *,
        has_active_run: Callable[[], Awaitable[bool]],
    ) -> ThreadStatus | None:
        """Store ``status`` for a thread one of whose runs just ended, or ``busy``
        while another of its runs is pending or running; return what was stored
        (None: the thread is missing, nothing was written).

        ``has_active_run`` says whether the thread has a pending or running
        run. Guarantee: a run admitted while this call runs keeps the thread
        ``busy`` (its admission marks the thread busy after committing the
        run). The default asks ``has_active_run`` before writing and once more
        after writing ``status`` (writing ``busy`` then if it says so);
        :class:`~runlane.runtime.threads.sql.SqlThreadStore` decides in its
        ``UPDATE`` from the runs table instead (one statement, no read).
        """
        check_thread_status(status)
        if status != "busy" and await has_active_run():
            status = "busy"
        if not await self.set_status(thread_id, status):
            return None
        if status != "busy" and await has_active_run():
            # Admitted between the check and the write; its own busy write
            # may have landed before ours.
            status = "busy"
            await self.set_status(thread_id, status)
        return status

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The default does nothing."""
