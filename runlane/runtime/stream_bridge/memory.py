"""The in-process stream bridge: the embedded default, one process only.

Each run's stream is a deque of retained entries plus its terminal entry.
Readers pull from it by sequence number and park on a future the next write
resolves, so a slow reader costs nothing beyond the retained log, and every
reader receives the very same :class:`StreamEvent` objects (each encoded once,
at publish).

Eviction at ``max_active_streams`` (streams of every status count): ``lru``
removes the terminal stream least recently used (ended, or attached to by a
reader), ending its readers with END_SENTINEL; when every stream is still
active it raises StreamCapacityExceededError rather than end a live run.
``reject`` always raises StreamCapacityExceededError at the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any, Unpack

from runlane.runtime.stream_bridge.base import (
    CANCELLED_SENTINEL,
    DEAD_LETTER_EVENT,
    END_SENTINEL,
    HEARTBEAT_SENTINEL,
    Clock,
    StreamBridge,
    StreamEvent,
    StreamGap,
    StreamLimitOptions,
    StreamStatus,
    check_cursor,
    encode_data,
    find_gap,
    parse_cursor,
    terminal_kind,
    validate_event_name,
)
from runlane.runtime.stream_bridge.exceptions import (
    BridgeClosedError,
    StreamCapacityExceededError,
    StreamTerminatedError,
)

__all__ = ["MemoryStreamBridge"]

logger = logging.getLogger(__name__)


class _Stream:
    __slots__ = (
        "awaiting_since",
        "created_at",
        "ended_at",
        "entries",
        "last_publish_at",
        "last_reader_at",
        "nbytes",
        "newest",
        "readers",
        "removed",
        "status",
        "terminal",
        "trimmed",
        "wakeup",
    )

    def __init__(self, now: float) -> None:
        self.entries: deque[StreamEvent] = deque()
        self.trimmed = 0  # data entries dropped from the front; entries[0] has id trimmed + 1
        self.newest = 0
        self.nbytes = 0
        self.terminal: StreamEvent | None = None
        self.status = StreamStatus.ACTIVE
        self.created_at = now
        self.last_publish_at = now
        self.awaiting_since: float | None = None
        self.ended_at: float | None = None
        self.readers = 0
        self.last_reader_at: float | None = None
        self.removed = False
        # Futures of the parked readers (insertion-ordered; None when nobody waits).
        self.wakeup: dict[asyncio.Future[bool], None] | None = None

    def entry(self, seq: int) -> StreamEvent | None:
        index = seq - self.trimmed - 1
        if 0 <= index < len(self.entries):
            return self.entries[index]
        if self.terminal is not None and seq == self.newest:
            return self.terminal
        return None

    def wake(self) -> None:
        parked = self.wakeup
        if parked is not None:
            self.wakeup = None
            for future in parked:
                if not future.done():
                    future.set_result(True)

    async def wait(self, reader: _Reader) -> bool:
        """Park until the next change; False if the reader's heartbeat interval passed first."""
        future = reader.park()
        parked = self.wakeup
        if parked is None:
            parked = self.wakeup = {}
        parked[future] = None
        try:
            return await future
        finally:
            reader.future = None
            # Not woken by wake() (timed out, or the reader was cancelled): unpark.
            if self.wakeup is parked and (future.cancelled() or not future.result()):
                del parked[future]
                if not parked:
                    self.wakeup = None


class _Reader:
    """One reader's heartbeat timer, armed lazily rather than once per wait.

    Each wait notes when it began; the timer fires at most once per interval
    and either ends a wait that has lasted the full interval or re-arms for
    the current wait's deadline. Creating and cancelling a timer handle for
    every wait was the largest cost of delivering an event.
    """

    __slots__ = ("future", "interval", "loop", "since", "timer")

    def __init__(self, interval: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.interval = interval
        self.future: asyncio.Future[bool] | None = None
        self.since = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def park(self) -> asyncio.Future[bool]:
        loop = self.loop
        future = self.future = loop.create_future()
        self.since = loop.time()
        if self.timer is None:
            self.timer = loop.call_at(self.since + self.interval, self._expire)
        return future

    def _expire(self) -> None:
        self.timer = None
        future = self.future
        if future is None or future.done():
            return  # not waiting: the next wait arms the timer again
        deadline = self.since + self.interval
        if self.loop.time() >= deadline:
            future.set_result(False)
        else:
            self.timer = self.loop.call_at(deadline, self._expire)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Awaited:
    """Readers parked on a run that has no stream yet."""

    __slots__ = ("arrived", "readers")

    def __init__(self) -> None:
        self.arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.readers = 0


class MemoryStreamBridge(StreamBridge):
    """Per-run event logs in this process's memory; see :class:`StreamBridge`.

    Limits and their defaults are listed on
    :class:`~runlane.runtime.stream_bridge.base.StreamLimits`; ``clock``
    timestamps every housekeeping decision.
    """

    def __init__(
        self, *, clock: Clock = time.monotonic, **limits: Unpack[StreamLimitOptions]
    ) -> None:
        super().__init__(clock=clock, **limits)
        self._streams: dict[str, _Stream] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # terminal streams, LRU first
        self._awaited: dict[str, _Awaited] = {}
        self._max_events = self.limits.max_events_per_stream
        self._max_bytes = self.limits.max_bytes_per_stream
        self._closed = False
        self._cleanup_task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self._check_open()
        if self._cleanup_task is None:
            self._cleanup_task = asyncio.create_task(
                self._cleanup_loop(), name="runlane-stream-bridge-cleanup"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self._streams.values():
            stream.wake()
        for awaited in self._awaited.values():
            if not awaited.arrived.done():
                awaited.arrived.set_result(None)
        self._streams.clear()
        self._ended.clear()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.cleanup_interval)
            try:
                await self.sweep()
            except Exception:  # one failed pass must not end housekeeping for good
                logger.exception("stream bridge housekeeping pass failed")

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeClosedError()

    # --- writing ---------------------------------------------------------------

    async def publish(self, run_id: str, event: str, data: Any) -> str:
        if self._closed:
            raise BridgeClosedError()
        validate_event_name(event)
        payload = encode_data(data)
        stream = self._streams.get(run_id) or self._create(run_id)
        if stream.terminal is not None:
            raise StreamTerminatedError(
                f"run {run_id!r} already ended with {stream.terminal.event!r} "
                f"(id {stream.terminal.id}); nothing more can be published"
            )
        stream.newest += 1
        entry = StreamEvent.from_payload(str(stream.newest), event, payload)
        stream.entries.append(entry)
        stream.nbytes += len(payload)
        stream.last_publish_at = self.clock()
        stream.awaiting_since = None
        if len(stream.entries) > self._max_events or stream.nbytes > self._max_bytes:
            self._trim(stream)
        stream.wake()
        return entry.id

    async def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any = None) -> str:
        self._check_open()
        status, name = terminal_kind(kind)
        return self._terminate(run_id, status, name, encode_data(data))

    def _terminate(self, run_id: str, status: StreamStatus, name: str, payload: bytes) -> str:
        stream = self._streams.get(run_id) or self._create(run_id)
        if stream.terminal is not None:
            return stream.terminal.id
        stream.newest += 1
        stream.terminal = StreamEvent.from_payload(str(stream.newest), name, payload, terminal=True)
        stream.status = status
        stream.ended_at = self.clock()
        stream.awaiting_since = None
        self._ended[run_id] = None
        stream.wake()
        return stream.terminal.id

    def _trim(self, stream: _Stream) -> None:
        entries = stream.entries
        while entries and (len(entries) > self._max_events or stream.nbytes > self._max_bytes):
            stream.nbytes -= len(entries.popleft().payload)
            stream.trimmed += 1

    def _create(self, run_id: str) -> _Stream:
        if len(self._streams) >= self.limits.max_active_streams:
            if self.limits.stream_eviction_policy == "reject" or not self._ended:
                raise StreamCapacityExceededError(
                    f"the bridge holds {len(self._streams)} streams "
                    f"(max_active_streams={self.limits.max_active_streams}) "
                    f"and cannot open one for run {run_id!r}"
                )
            self._remove(next(iter(self._ended)))
        stream = _Stream(self.clock())
        self._streams[run_id] = stream
        awaited = self._awaited.pop(run_id, None)
        if awaited is not None:
            awaited.arrived.set_result(None)
        return stream

    def _remove(self, run_id: str) -> None:
        stream = self._streams.pop(run_id, None)
        if stream is None:
            return
        self._ended.pop(run_id, None)
        stream.removed = True
        stream.wake()

    async def mark_awaiting_input(self, run_id: str) -> None:
        self._check_open()
        stream = self._streams.get(run_id)
        if stream is not None and stream.terminal is None:
            stream.awaiting_since = self.clock()

    # --- housekeeping ----------------------------------------------------------

    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        self._check_open()
        if delay > 0:
            await asyncio.sleep(delay)
            if self._closed:  # close() already dropped every stream
                return
        self._remove(run_id)

    async def sweep(self) -> None:
        self._check_open()
        now = self.clock()
        limits = self.limits
        for run_id, stream in list(self._streams.items()):
            if stream.ended_at is None:
                reason = limits.dead_letter_reason(
                    now,
                    created_at=stream.created_at,
                    last_publish_at=stream.last_publish_at,
                    awaiting_since=stream.awaiting_since,
                )
                if reason is not None:
                    payload = encode_data({"reason": reason})
                    self._terminate(run_id, StreamStatus.ERRORED, DEAD_LETTER_EVENT, payload)
            elif limits.terminal_expired(
                now,
                ended_at=stream.ended_at,
                last_reader_at=stream.last_reader_at,
                readers=stream.readers,
            ):
                self._remove(run_id)

    # --- reading ---------------------------------------------------------------

    async def stream_exists(self, run_id: str) -> bool:
        self._check_open()
        return run_id in self._streams

    async def get_status(self, run_id: str) -> StreamStatus | None:
        self._check_open()
        stream = self._streams.get(run_id)
        return None if stream is None else stream.status

    async def latest_event_id(self, run_id: str) -> str | None:
        self._check_open()
        stream = self._streams.get(run_id)
        return None if stream is None else str(stream.newest)

    async def subscribe(
        self,
        run_id: str,
        *,
        last_event_id: str | None = None,
        heartbeat_interval: float = 15.0,
    ) -> AsyncIterator[StreamEvent | StreamGap]:
        position = parse_cursor(last_event_id)
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
        self._check_open()

        stream = self._streams.get(run_id)
        if stream is None:
            awaited = self._awaited.get(run_id)
            if awaited is None:
                awaited = self._awaited[run_id] = _Awaited()
            awaited.readers += 1
            try:
                while stream is None:
                    done, _ = await asyncio.wait((awaited.arrived,), timeout=heartbeat_interval)
                    if self._closed:
                        yield CANCELLED_SENTINEL
                        return
                    stream = self._streams.get(run_id)
                    if stream is None and not done:
                        yield HEARTBEAT_SENTINEL
                    elif stream is None:
                        # The stream came and went before this reader ran: wait anew.
                        awaited.readers -= 1
                        awaited = self._awaited.setdefault(run_id, _Awaited())
                        awaited.readers += 1
            finally:
                awaited.readers -= 1
                if awaited.readers == 0 and self._awaited.get(run_id) is awaited:
                    del self._awaited[run_id]

        check_cursor(run_id, position, stream.newest)
        reader = _Reader(heartbeat_interval)
        stream.readers += 1
        stream.last_reader_at = self.clock()
        if run_id in self._ended:
            self._ended.move_to_end(run_id)
        try:
            while True:
                if self._closed:
                    yield CANCELLED_SENTINEL
                    return
                if stream.removed:
                    yield END_SENTINEL
                    return
                wanted = (position or 0) + 1
                if wanted <= stream.trimmed:
                    gap = find_gap(run_id, position, stream.trimmed + 1, stream.newest)
                    position = stream.trimmed
                    if gap is not None:
                        yield gap
                    continue
                entry = stream.entry(wanted)
                if entry is None and stream.terminal is not None:
                    return  # the cursor already covers the terminal entry
                if entry is not None:
                    position = wanted
                    yield entry
                    if entry.terminal:
                        return
                elif not await stream.wait(reader):
                    yield HEARTBEAT_SENTINEL
        finally:
            reader.close()
            stream.readers -= 1
            stream.last_reader_at = self.clock()

    # --- introspection ---------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Counters over every retained stream; events and bytes include terminal entries.

        Extra keys: ``waiting_subscribers`` (readers parked on a run with no
        stream yet) and ``trimmed_events`` (data entries dropped by retention).
        """
        streams = self._streams.values()
        terminal = len(self._ended)
        return {
            "total_streams": len(self._streams),
            "active_streams": len(self._streams) - terminal,
            "terminal_streams": terminal,
            "total_events": sum(len(s.entries) + (s.terminal is not None) for s in streams),
            "total_bytes": sum(
                s.nbytes + (len(s.terminal.payload) if s.terminal is not None else 0)
                for s in streams
            ),
            "total_subscribers": sum(s.readers for s in streams),
            "waiting_subscribers": sum(a.readers for a in self._awaited.values()),
            "trimmed_events": sum(s.trimmed for s in streams),
            "closed": self._closed,
        }
