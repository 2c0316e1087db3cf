"""A short-lived, in-process cache of assistant reads (``AssistantStore.get``).

Every run reads its assistant when it is admitted; the cache saves that
database read when the same assistant is read again within ``ttl`` seconds.

Guarantees (:class:`AssistantCache` as :class:`~runlane.runtime.assistants.sql.SqlAssistantStore`
uses it):

- **Writes through the same store are seen at once.** Every write method
  drops the assistant's entry after its transaction ended (committed or not),
  and a read that was under way while any write ran is not cached, so a
  cached value is never older than the last write this process made.
- **Writes by other processes** (several workers or machines on one
  database) are seen within ``ttl`` seconds: an entry is used for at most
  ``ttl`` seconds after the read that filled it began, then read again.
- **Callers may change what they get**: each hit is a deep copy of the
  cached JSON value.
- ``ttl <= 0`` turns the cache off. Entries are dropped when they expire or
  when there are more than ``max_entries`` (the oldest go first), so it
  never grows without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_ASSISTANT_CACHE_TTL", "AssistantCache", "json_copy"]

DEFAULT_ASSISTANT_CACHE_TTL = 1.0
"""Seconds an assistant read is reused; also how stale another process's write can look."""


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts and lists copied, the rest shared)."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


class AssistantCache:
    """Assistants by id, each kept for ``ttl`` seconds; see the module docstring."""

    def __init__(
        self,
        ttl: float = DEFAULT_ASSISTANT_CACHE_TTL,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self._generation = 0  # bumped by every write
        self._writing = 0  # writes under way

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, assistant_id: str) -> dict[str, Any] | None:
        """A copy of the cached assistant, or None (missing or expired)."""
        entry = self._entries.get(assistant_id)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[assistant_id]
            return None
        result: dict[str, Any] = json_copy(value)
        return result

    def ticket(self) -> tuple[int, float]:
        """Taken before a read; hand it to :meth:`fill` with what the read found."""
        return self._generation, self._clock()

    def fill(
        self, assistant_id: str, value: dict[str, Any] | None, ticket: tuple[int, float]
    ) -> None:
        """Cache what a read found, unless a write ran meanwhile (or runs now)."""
        generation, began = ticket
        if not self.enabled or value is None:
            return
        if self._writing or generation != self._generation:
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[assistant_id] = (began + self.ttl, json_copy(value))

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]

    def write_began(self) -> None:
        """Called before a write: no read under way from now on fills the cache."""
        self._writing += 1
        self._generation += 1

    def write_ended(self, assistant_id: str | None) -> None:
        """Called after a write (whatever its outcome): drop ``assistant_id`` (None: all)."""
        self._writing -= 1
        self._generation += 1
        if assistant_id is None:
            self._entries.clear()
        else:
            self._entries.pop(assistant_id, None)
