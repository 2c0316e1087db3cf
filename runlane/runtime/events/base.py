"""The run event log: the contract every backend keeps, and what they share.

An event is written as a :class:`NewEvent` and read back as a plain ``dict``
with the keys of :data:`EVENT_FIELDS`. Guarantees of every backend (the
contract suite in ``tests/runtime/events/`` checks each one):

- **seq.** The store numbers events per thread: 1, 2, 3, ... with no gap left
  by a write (a failed write reserves nothing) and no number given twice,
  whatever the concurrency. A batch's events of one thread get consecutive
  numbers in input order. :meth:`EventStore.delete_by_run` leaves gaps;
  :meth:`EventStore.delete_by_thread` removes the counter too, so a thread
  written again afterwards starts at 1.
- **Content** is a ``str`` or any JSON value and comes back as it went in (a
  dict as a dict, never a Python repr). Content whose UTF-8 (for a ``str``)
  or JSON encoding is longer than ``max_content_bytes`` is cut to at most
  that many bytes on a character boundary and stored as a ``str``; its
  metadata then carries ``truncated: true`` and ``original_bytes`` (plus
  ``truncated_json: true`` when the original was not a ``str``).
- **created_at** is an ISO-8601 string with a UTC offset.
- **Singletons.** :meth:`EventStore.put_if_absent` writes only when the run
  has no event of that type yet, atomically: of any number of concurrent
  calls, exactly one writes. :meth:`EventStore.put` never checks.
- **Paging.** Reads return :class:`EventPage` items in ascending ``seq``.
  With ``after_seq`` (or no cursor) they are the first ``limit`` events with
  a greater seq; with only ``before_seq`` the last ``limit`` events with a
  smaller seq. With both, the first ``limit`` events strictly between them.
  ``has_more`` says whether more events match beyond the page in the
  direction of paging.
- **User scoping.** Reads given a ``user_id`` see only that user's events;
  ``None`` is an unscoped, internal read.
- **Validation.** Thread and run ids are 1 to 64 characters from A-Z, a-z,
  0-9, '-' and '_'; a write with another id, an unknown category or content
  or metadata that is not JSON (or metadata holding a NUL character, which
  Postgres JSONB refuses) raises :class:`runlane.exceptions.InvalidInputError`
  and writes nothing. A read with a malformed id finds nothing.
"""

from __future__ import annotations

import abc
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson

from runlane.exceptions import InvalidInputError, InvalidPayloadError
from runlane.runtime.runs.schemas import validate_thread_id

__all__ = [
    "CATEGORIES",
    "DEFAULT_MAX_CONTENT_BYTES",
    "EVENT_FIELDS",
    "MAX_EVENT_TYPE_LENGTH",
    "EventPage",
    "EventStore",
    "NewEvent",
    "check_limit",
    "is_valid_id",
    "prepare",
    "select_page",
    "truncate_content",
]

CATEGORIES: Final = ("message", "trace", "lifecycle")
"""message: shown in a chat history; trace: model and tool details; lifecycle:
run start and end, the delivery receipt, errors."""

EVENT_FIELDS: Final = (
    "thread_id",
    "run_id",
    "event_type",
    "category",
    "content",
    "metadata",
    "seq",
    "created_at",
    "user_id",
)
"""Keys of every event a store returns, in this order."""

DEFAULT_MAX_CONTENT_BYTES: Final = 64 * 1024
MAX_EVENT_TYPE_LENGTH: Final = 64

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a producer hands it to the store (the store adds seq and time)."""

    thread_id: str
    run_id: str
    event_type: str
    category: str
    content: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events in ascending seq, and whether more lie beyond it."""

    items: list[dict[str, Any]]
    has_more: bool


class EventStore(abc.ABC):
    """Durable log of run events. See the module docstring for guarantees."""

    max_content_bytes: int

    async def put(self, event: NewEvent) -> dict[str, Any]:
        """Append one event; returns it as stored (with seq and created_at)."""
        return (await self.put_batch([event]))[0]

    @abc.abstractmethod
    async def put_batch(self, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        """Append events that may span threads and runs, all or none.

        (The JSONL backend writes run file by run file; see its module.)

        Returns the stored events in input order. On SQL a batch whose commit
        succeeded but whose acknowledgement was lost is retried and can be
        written twice; everything else is written once.
        """

    @abc.abstractmethod
    async def put_if_absent(self, event: NewEvent) -> dict[str, Any] | None:
        """Append ``event`` unless its run already has an event of its type.

        Returns the stored event, or None when one existed (nothing written).
        """

    @abc.abstractmethod
    async def list_messages(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> EventPage:
        """A page of the thread's ``message`` events."""

    @abc.abstractmethod
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
        """A page of the run's ``message`` events."""

    @abc.abstractmethod
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
        """A forward page of the run's events of any category.

        ``event_types`` keeps only those types; None or empty keeps all.
        """

    @abc.abstractmethod
    async def count_messages(
        self, thread_id: str, *, run_id: str | None = None, user_id: str | None = None
    ) -> int:
        """How many ``message`` events the thread (or one of its runs) has."""

    @abc.abstractmethod
    async def delete_by_thread(self, thread_id: str) -> int:
        """Remove the thread's events and its seq counter; returns how many events."""

    @abc.abstractmethod
    async def delete_by_run(self, thread_id: str, run_id: str) -> int:
        """Remove the run's events; returns how many."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. The default does nothing."""


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a well-formed thread or run id."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_limit(limit: int) -> None:
    """InvalidInputError unless ``limit`` is a positive integer."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer, not {limit!r}.")


def _json_bytes(what: str, value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise InvalidPayloadError(f"Event {what} is not JSON-serialisable: {exc}") from None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def truncate_content(content: Any, max_bytes: int) -> tuple[Any, dict[str, Any]]:
    """``content`` as stored, and the metadata keys truncation adds (maybe none).

    A ``str`` is measured in UTF-8, anything else by its JSON encoding; either
    longer than ``max_bytes`` becomes a ``str`` of at most ``max_bytes`` bytes
    cut on a character boundary. Other content is returned as plain JSON types.
    """
    if isinstance(content, str):
        try:
            encoded = content.encode()
        except UnicodeEncodeError as exc:
            raise InvalidPayloadError(f"Event content is not valid Unicode: {exc}") from None
        was_json = False
    else:
        encoded = _json_bytes("content", content)
        was_json = True
    if len(encoded) <= max_bytes:
        return (orjson.loads(encoded) if was_json else content), {}
    # Cutting mid-character leaves an incomplete tail that "ignore" drops.
    cut = encoded[:max_bytes].decode("utf-8", errors="ignore")
    extra: dict[str, Any] = {"truncated": True, "original_bytes": len(encoded)}
    if was_json:
        extra["truncated_json"] = True
    return cut, extra


def prepare(event: NewEvent, max_content_bytes: int, now: datetime | None = None) -> dict[str, Any]:
    """The stored form of ``event`` without its seq, validated; raises before any write."""
    validate_thread_id(event.thread_id)
    if not is_valid_id(event.run_id):
        raise InvalidInputError(
            f"Invalid run id {event.run_id!r}: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_'."
        )
    if event.category not in CATEGORIES:
        raise InvalidInputError(
            f"Unknown event category {event.category!r}: use one of {', '.join(CATEGORIES)}."
        )
    if (
        not isinstance(event.event_type, str)
        or not 0 < len(event.event_type) <= MAX_EVENT_TYPE_LENGTH
    ):
        raise InvalidInputError(
            f"Invalid event type {event.event_type!r}: use 1 to {MAX_EVENT_TYPE_LENGTH} characters."
        )
    if event.user_id is not None and not (
        isinstance(event.user_id, str) and len(event.user_id) <= 64
    ):
        raise InvalidInputError(f"Invalid user id {event.user_id!r}: use at most 64 characters.")
    if not isinstance(event.metadata, dict):
        raise InvalidPayloadError("Event metadata must be a dict.")
    metadata = orjson.loads(_json_bytes("metadata", event.metadata))
    if _has_nul(metadata):
        # Postgres JSONB cannot hold it; refused everywhere to keep backends alike.
        raise InvalidPayloadError("Event metadata must not contain NUL characters.")
    content, extra = truncate_content(event.content, max_content_bytes)
    metadata.update(extra)
    return {
        "thread_id": event.thread_id,
        "run_id": event.run_id,
        "event_type": event.event_type,
        "category": event.category,
        "content": content,
        "metadata": metadata,
        "seq": 0,
        "created_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "user_id": event.user_id,
    }


def select_page(
    entries: Sequence[_T],
    seq_of: Callable[[_T], int],
    match: Callable[[_T], bool],
    *,
    limit: int,
    before_seq: int | None,
    after_seq: int | None,
) -> tuple[list[_T], bool]:
    """The page of matching ``entries`` (ascending seq) and ``has_more``, per the paging rule.

    For stores that keep a thread's events in memory in ascending seq order.
    """
    check_limit(limit)
    lo = 0 if after_seq is None else bisect_right(entries, after_seq, key=seq_of)
    hi = len(entries) if before_seq is None else bisect_left(entries, before_seq, key=seq_of)
    backward = before_seq is not None and after_seq is None
    indexes = range(hi - 1, lo - 1, -1) if backward else range(lo, hi)
    found: list[_T] = []
    for index in indexes:
        if match(entries[index]):
            found.append(entries[index])
            if len(found) > limit:
                break
    has_more = len(found) > limit
    del found[limit:]
    if backward:
        found.reverse()
    return found, has_more
