"""The stream bridge contract: a per-run event log with any number of readers.

Backends (``.memory``, ``.redis``) subclass :class:`StreamBridge`; everything
here that is not abstract is shared by both, so the rules below live in one
place: event encoding, the cursor grammar, gap detection, terminal kinds and
the housekeeping decisions (pure functions of timestamps from the injected clock).
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import FrozenInstanceError, dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack

import orjson

from runlane.runtime.stream_bridge.exceptions import EventDataError

__all__ = [
    "CANCELLED_SENTINEL",
    "DEAD_LETTER_EVENT",
    "END_SENTINEL",
    "HEARTBEAT_SENTINEL",
    "TERMINAL_EVENTS",
    "TERMINAL_EVENT_NAMES",
    "TERMINAL_STATES",
    "Clock",
    "StreamBridge",
    "StreamEvent",
    "StreamGap",
    "StreamLimitOptions",
    "StreamLimits",
    "StreamStatus",
    "check_cursor",
    "encode_data",
    "find_gap",
    "parse_cursor",
    "terminal_kind",
    "validate_event_name",
]

Clock = Callable[[], float]
"""Seconds from an arbitrary origin that never go backwards (``time.monotonic``)."""


class StreamStatus(StrEnum):
    """ACTIVE until the terminal entry, then ENDED, CANCELLED or ERRORED; CLOSED: bridge closed."""

    ACTIVE = "active"
    ENDED = "ended"
    CANCELLED = "cancelled"
    ERRORED = "errored"
    CLOSED = "closed"


TERMINAL_STATES: frozenset[StreamStatus] = frozenset(
    {StreamStatus.ENDED, StreamStatus.CANCELLED, StreamStatus.ERRORED}
)

TERMINAL_EVENT_NAMES: dict[StreamStatus, str] = {
    StreamStatus.ENDED: "end",
    StreamStatus.CANCELLED: "cancel",
    StreamStatus.ERRORED: "error",
}
DEAD_LETTER_EVENT = "dead_letter"
"""The terminal entry housekeeping writes for a stalled or too old stream (status ERRORED)."""
TERMINAL_EVENTS: frozenset[str] = frozenset({*TERMINAL_EVENT_NAMES.values(), DEAD_LETTER_EVENT})


def _dumps(data: Any) -> bytes:
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:
        raise EventDataError(
            f"stream event data is not JSON-serialisable ({exc}); publish only JSON values"
        ) from exc
    # orjson's result keeps its whole working buffer (4 KiB for a tiny event);
    # a retained log of them would cost 4 KiB per event. An exact copy is cheap.
    return memoryview(encoded).tobytes()


_UNDECODED: Any = object()


class StreamEvent:
    """One entry of a run's stream, or a sentinel (``id == ""``). Immutable.

    ``payload`` is the JSON encoding of ``data``, made once at publish, so the
    SSE layer writes ``id:``/``event:``/``data:`` frames without encoding
    again. ``data`` is the JSON round trip of what was published; an event
    built with :meth:`from_payload` decodes it on first access (once, shared
    by every reader), so readers that only forward ``payload`` never pay for
    it. ``terminal`` marks the stream's single terminal entry; an ordinary
    event may be named ``error`` too, so readers test this flag, never the
    name. Equality compares ``id``, ``event`` and ``data``.
    """

    __slots__ = ("_data", "event", "id", "payload", "terminal")
    __match_args__ = ("id", "event", "data")

    id: str
    event: str
    payload: bytes
    terminal: bool
    _data: Any

    def __init__(
        self,
        id: str,
        event: str,
        data: Any = None,
        payload: bytes = b"",
        terminal: bool = False,
    ) -> None:
        init = object.__setattr__
        init(self, "id", id)
        init(self, "event", event)
        init(self, "payload", payload or _dumps(data))
        init(self, "terminal", terminal)
        init(self, "_data", data)

    @classmethod
    def from_payload(
        cls, id: str, event: str, payload: bytes, *, terminal: bool = False
    ) -> StreamEvent:
        """An event whose ``data`` is decoded from ``payload`` when first read."""
        return cls(id, event, _UNDECODED, payload, terminal)

    @property
    def data(self) -> Any:
        data = self._data
        if data is _UNDECODED:
            data = orjson.loads(self.payload)
            object.__setattr__(self, "_data", data)
        return data

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamEvent):
            return NotImplemented
        return (self.id, self.event, self.data) == (other.id, other.event, other.data)

    def __hash__(self) -> int:
        return hash((self.id, self.event))

    def __repr__(self) -> str:
        flag = ", terminal=True" if self.terminal else ""
        return f"StreamEvent(id={self.id!r}, event={self.event!r}, data={self.data!r}{flag})"


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Events between the reader's position and the oldest retained entry are gone.

    The reader continues with the entry ``earliest_available_event_id`` (``None``
    when nothing is retained yet); it should reload the run's durable state.
    """

    run_id: str
    requested_event_id: str | None
    earliest_available_event_id: str | None
    latest_available_event_id: str | None


HEARTBEAT_SENTINEL = StreamEvent(id="", event="__heartbeat__", data=None)
"""Nothing new within the heartbeat interval; the reader keeps waiting."""
END_SENTINEL = StreamEvent(id="", event="__end__", data=None)
"""The stream was removed while the reader was attached; no more entries follow."""
CANCELLED_SENTINEL = StreamEvent(id="", event="__cancelled__", data=None)
"""The bridge was closed while the reader was attached; no more entries follow."""


def encode_data(data: Any) -> bytes:
    """The JSON payload of ``data``; raise EventDataError if it is not JSON."""
    return _dumps(data)


def validate_event_name(event: str) -> None:
    """Raise ValueError unless ``event`` can be an SSE ``event:`` field."""
    if not isinstance(event, str) or not event or "\n" in event or "\r" in event:
        raise ValueError(f"event name must be a non-empty single-line string, got {event!r}")


def terminal_kind(kind: StreamStatus) -> tuple[StreamStatus, str]:
    """Return ``(status, entry name)`` for a terminal kind; raise ValueError otherwise."""
    try:
        status = StreamStatus(kind)
    except ValueError:
        status = None
    if status not in TERMINAL_EVENT_NAMES:
        raise ValueError(f"terminal kind must be ENDED, CANCELLED or ERRORED, got {kind!r}")
    return status, TERMINAL_EVENT_NAMES[status]


_CURSOR = re.compile(r"0|[1-9][0-9]*")


def parse_cursor(last_event_id: str | None) -> int | None:
    """Parse a cursor: ``None``, or ``0|[1-9][0-9]*`` (``"0"``: from the first event)."""
    if last_event_id is None:
        return None
    if not isinstance(last_event_id, str) or not _CURSOR.fullmatch(last_event_id):
        raise ValueError(f"malformed stream cursor {last_event_id!r}: use a decimal event id")
    return int(last_event_id)


def check_cursor(run_id: str, cursor: int | None, newest: int) -> None:
    """Raise ValueError if ``cursor`` is beyond ``newest``, the stream's newest id."""
    if cursor is not None and cursor > newest:
        raise ValueError(
            f"stream cursor {cursor} of run {run_id!r} is beyond its newest event {newest}"
        )


def find_gap(
    run_id: str, position: int | None, first_retained: int, newest: int
) -> StreamGap | None:
    """The gap a reader hits, or None.

    ``position`` is the last id the reader has (its cursor; ``None`` for none),
    ``first_retained`` the oldest retained id (``newest + 1`` when nothing is
    retained) and ``newest`` the newest id ever written (0 for none).
    """
    if (position or 0) + 1 >= first_retained:
        return None
    return StreamGap(
        run_id=run_id,
        requested_event_id=None if position is None else str(position),
        earliest_available_event_id=str(first_retained) if first_retained <= newest else None,
        latest_available_event_id=str(newest) if newest else None,
    )


class StreamLimitOptions(TypedDict, total=False):
    max_events_per_stream: int
    max_bytes_per_stream: int
    max_active_streams: int
    stream_eviction_policy: Literal["lru", "reject"]
    terminal_retention_ttl: float
    active_no_publish_timeout: float
    orphan_timeout: float
    max_stream_age: float
    hitl_extended_timeout: float
    cleanup_interval: float


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Retention and housekeeping limits (seconds for times, from the bridge's clock).

    ============================ ========== ==============================================
    limit                        default    meaning
    ============================ ========== ==============================================
    max_events_per_stream        256        data entries kept per stream (oldest trimmed)
    max_bytes_per_stream         10 MiB     payload bytes kept per stream (oldest trimmed)
    max_active_streams           1000       streams held at once, terminal ones included
    stream_eviction_policy       ``"lru"``  at the limit: ``lru`` removes the least
                                            recently used terminal stream; ``reject``
                                            refuses the new stream
    terminal_retention_ttl       300        a terminal stream is removed this long after
                                            its end (when no reader is attached)
    active_no_publish_timeout    600        an active stream idle this long gets dead_letter
    orphan_timeout               60         a terminal stream without readers is removed
                                            this long after its end or its last reader
    max_stream_age               86400      an active stream this old gets dead_letter
    hitl_extended_timeout        7200       idle allowance after mark_awaiting_input
    cleanup_interval             30         seconds between housekeeping sweeps
    ============================ ========== ==============================================

    The terminal entry never counts against the retention limits.
    """

    max_events_per_stream: int = 256
    max_bytes_per_stream: int = 10 * 1024 * 1024
    max_active_streams: int = 1000
    stream_eviction_policy: Literal["lru", "reject"] = "lru"
    terminal_retention_ttl: float = 300.0
    active_no_publish_timeout: float = 600.0
    orphan_timeout: float = 60.0
    max_stream_age: float = 86400.0
    hitl_extended_timeout: float = 7200.0
    cleanup_interval: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_events_per_stream", "max_bytes_per_stream", "max_active_streams"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "terminal_retention_ttl",
            "active_no_publish_timeout",
            "orphan_timeout",
            "max_stream_age",
            "hitl_extended_timeout",
            "cleanup_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.stream_eviction_policy not in ("lru", "reject"):
            raise ValueError(
                f"stream_eviction_policy must be 'lru' or 'reject', "
                f"got {self.stream_eviction_policy!r}"
            )

    def dead_letter_reason(
        self,
        now: float,
        *,
        created_at: float,
        last_publish_at: float,
        awaiting_since: float | None,
    ) -> str | None:
        """Why an active stream must end with ``dead_letter`` now, or None.

        ``awaiting_since`` is the time of ``mark_awaiting_input`` (None when
        unmarked or a publish came after the mark).
        """
        if now - created_at >= self.max_stream_age:
            return "max_stream_age"
        if awaiting_since is not None:
            if now - awaiting_since >= self.hitl_extended_timeout:
                return "awaiting_input_timeout"
            return None
        if now - last_publish_at >= self.active_no_publish_timeout:
            return "no_publish_timeout"
        return None

    def terminal_expired(
        self, now: float, *, ended_at: float, last_reader_at: float | None, readers: int
    ) -> bool:
        """Whether a terminal stream may be removed now.

        ``last_reader_at`` is the last time a reader attached or detached.
        """
        if readers:
            return False
        seen = ended_at if last_reader_at is None else max(ended_at, last_reader_at)
        return now - seen >= self.orphan_timeout or now - ended_at >= self.terminal_retention_ttl


class StreamBridge(abc.ABC):
    """A per-run, append-only event log fanned out to any number of readers.

    Guarantees of every backend:

    - **Ids.** Entries get ids ``"1"``, ``"2"``, ... per run: dense, increasing,
      the terminal entry included. Compare them as integers.
    - **Exactly once, in order.** :meth:`subscribe` yields entries strictly after
      ``last_event_id`` (``None``: from the oldest retained entry). A malformed
      cursor, or one beyond the newest id of an existing stream, raises
      ``ValueError`` no later than the first ``__anext__``.
    - **Never skip silently.** When the entries a reader needs next were
      trimmed (or lost), it first gets one :class:`StreamGap`, then continues
      from the oldest retained entry.
    - **One terminal entry** (``end``, ``cancel``, ``error`` or ``dead_letter``,
      ``StreamEvent.terminal`` set) ends every stream; readers stop after it;
      repeated terminal calls write nothing and return its id; :meth:`publish`
      after it raises StreamTerminatedError.
    - **No zombies.** Only :meth:`publish` and terminal calls create a stream.
      Subscribing to a missing stream waits for it, yielding heartbeats.
    - **Sentinels** (``id == ""``): HEARTBEAT_SENTINEL after ``heartbeat_interval``
      of silence; END_SENTINEL when the stream is removed under a reader;
      CANCELLED_SENTINEL on :meth:`close`. None follows a terminal entry.
    - After :meth:`close`, every call except ``close`` and ``get_stats`` raises
      BridgeClosedError.
    - ``data`` comes back as the JSON round trip of what was published; data
      that is not JSON raises EventDataError (a ValueError and a TypeError),
      writing nothing.
    """

    def __init__(
        self, *, clock: Clock = time.monotonic, **limits: Unpack[StreamLimitOptions]
    ) -> None:
        self.limits = StreamLimits(**limits)
        self.clock = clock

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the housekeeping loop (a :meth:`sweep` every ``cleanup_interval``)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop housekeeping and end every reader with CANCELLED_SENTINEL. Idempotent."""

    @abc.abstractmethod
    async def publish(self, run_id: str, event: str, data: Any) -> str:
        """Append an event, creating the stream if needed, and return its id."""

    @abc.abstractmethod
    async def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any = None) -> str:
        """Append the terminal entry for ``kind`` (ENDED, CANCELLED or ERRORED); return its id."""

    async def publish_end(self, run_id: str, data: Any = None) -> str:
        """Append the ``end`` entry; return its id."""
        return await self.publish_terminal(run_id, StreamStatus.ENDED, data)

    async def cancel(self, run_id: str, data: Any = None) -> str:
        """Append the ``cancel`` entry; return its id."""
        return await self.publish_terminal(run_id, StreamStatus.CANCELLED, data)

    @abc.abstractmethod
    def subscribe(
        self,
        run_id: str,
        *,
        last_event_id: str | None = None,
        heartbeat_interval: float = 15.0,
    ) -> AsyncIterator[StreamEvent | StreamGap]:
        """Yield the run's entries strictly after ``last_event_id``, then live ones."""

    @abc.abstractmethod
    async def mark_awaiting_input(self, run_id: str) -> None:
        """Extend the idle allowance to ``hitl_extended_timeout`` until the next publish."""

    @abc.abstractmethod
    async def stream_exists(self, run_id: str) -> bool:
        """Whether the run has a stream (active or terminal)."""

    @abc.abstractmethod
    async def get_status(self, run_id: str) -> StreamStatus | None:
        """The stream's status, or None when it has no stream."""

    @abc.abstractmethod
    async def latest_event_id(self, run_id: str) -> str | None:
        """The newest id of the run's stream (the terminal's when ended); None without a stream.

        Passing it as ``last_event_id`` subscribes "live from now": every later
        event and nothing before it.
        """

    async def flush(self, run_id: str | None = None) -> None:  # noqa: B027 - optional hook
        """Wait until this process's accepted publishes (of ``run_id``, or all) are stored.

        Only a bridge that writes behind has anything to wait for; other
        processes see an entry once this returns.
        """

    @abc.abstractmethod
    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        """Remove the run's stream (after ``delay`` seconds); attached readers get END_SENTINEL."""

    @abc.abstractmethod
    async def sweep(self) -> None:
        """Run one housekeeping pass at ``clock()`` (dead-letter stalled, remove expired)."""

    @abc.abstractmethod
    def get_stats(self) -> dict[str, Any]:
        """Counters: at least ``total_streams, active_streams, terminal_streams,
        total_events, total_bytes, total_subscribers, closed``."""
