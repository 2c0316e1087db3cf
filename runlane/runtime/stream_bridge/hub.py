"""One shared reader per process for every local subscriber of the Redis bridge.

The hub runs a single blocking ``XREAD`` over the streams that have local
subscribers, always with explicit cursors (never ``$``), and copies what it
reads into each subscriber's bounded buffer. The buffer is only a cache:
a subscriber whose buffer overflowed, or who sees a hole in it, re-reads
Redis itself from its own cursor, so nothing is lost to a slow reader.

Redis connections therefore stay at one blocked connection per process, plus
the bounded command pool, however many readers attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runlane.runtime.stream_bridge import keys
from runlane.runtime.stream_bridge.base import StreamEvent
from runlane.runtime.stream_bridge.exceptions import RedisUnavailableError

__all__ = [
    "MAX_SEQ",
    "TRANSIENT_ERRORS",
    "Snapshot",
    "read_run",
    "with_retry",
    "as_bytes",
    "as_str",
    "entry_seq",
    "RetryPolicy",
    "StreamHub",
    "Subscription",
    "decode_entry",
    "iter_xread",
]

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
)
"""Errors after which the same command, from the same cursor, is worth retrying."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff: ``attempts`` tries, ``base * 2**n`` apart, at most ``cap``."""

    attempts: int = 5
    base: float = 0.05
    cap: float = 2.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


T = TypeVar("T")


async def with_retry(
    call: Callable[[], Awaitable[T]], retry: RetryPolicy, what: str, limit: float
) -> T:
    """``call()``, each try bounded by ``limit`` seconds, retried on transient errors.

    After ``retry.attempts`` failures it raises RedisUnavailableError.
    """
    failures = 0
    while True:
        try:
            async with asyncio.timeout(limit):
                return await call()
        except TRANSIENT_ERRORS as exc:
            failures += 1
            if failures >= retry.attempts:
                raise RedisUnavailableError(f"{what} failed {failures} times: {exc!r}") from exc
            await asyncio.sleep(retry.delay(failures))


def as_bytes(value: Any) -> bytes:
    """A reply value as bytes, whether or not the client decodes responses."""
    return value if isinstance(value, bytes) else str(value).encode()


def as_str(value: Any) -> str:
    """A reply value as str, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_seq(entry_id: Any) -> int:
    """The run-local sequence number of a stream entry id ``0-<seq>``."""
    return int(as_str(entry_id).partition("-")[2])


_EVENT, _DATA, _TERMINAL = (
    (name, name.encode()) for name in (keys.ENTRY_EVENT, keys.ENTRY_DATA, keys.ENTRY_TERMINAL)
)


def decode_entry(entry_id: Any, fields: Any) -> StreamEvent:
    """Turn one stream entry into a StreamEvent (its data is decoded on first read, once)."""
    get = fields.get
    payload = as_bytes(get(_DATA[1], get(_DATA[0], b"null")))
    return StreamEvent.from_payload(
        str(entry_seq(entry_id)),
        as_str(get(_EVENT[1], get(_EVENT[0], b""))),
        payload,
        terminal=get(_TERMINAL[1], get(_TERMINAL[0])) is not None,
    )


def iter_xread(reply: Any) -> Iterator[tuple[str, list[Any]]]:
    """``(key, entries)`` pairs of an XREAD reply in either RESP2 or RESP3 shape."""
    if not reply:
        return
    if isinstance(reply, dict):
        for key, value in reply.items():
            # RESP3 wraps each key's entries in one more list (redis-py's parser).
            entries = value[0] if value and isinstance(value[0], list) else value
            yield as_str(key), list(entries)
        return
    for key, entries in reply:
        yield as_str(key), list(entries)


class Subscription:
    """One local reader's attachment to the hub.

    The hub appends decoded events to ``buffer`` (at most ``capacity``; beyond
    that it sets ``overflowed`` and drops, and the reader re-reads Redis) and
    sets ``signal``. ``stale`` asks the reader to re-read Redis (a hole, a hub
    error); ``removed`` and ``closed`` end the reader with a sentinel.
    """

    __slots__ = (
        "block_ms",
        "buffer",
        "capacity",
        "closed",
        "key",
        "overflowed",
        "removed",
        "signal",
        "stale",
    )

    def __init__(self, key: str, *, capacity: int, block_ms: int) -> None:
        self.key = key
        self.capacity = capacity
        self.block_ms = block_ms
        self.buffer: deque[StreamEvent] = deque()
        self.signal = asyncio.Event()
        self.overflowed = False
        self.stale = False
        self.removed = False
        self.closed = False

    def offer(self, events: list[StreamEvent]) -> None:
        if not self.overflowed:
            room = self.capacity - len(self.buffer)
            if len(events) > room:
                self.overflowed = True
                self.buffer.clear()
            else:
                self.buffer.extend(events)
        self.signal.set()

    def poke(self, *, stale: bool = False, removed: bool = False, closed: bool = False) -> None:
        self.stale |= stale
        self.removed |= removed
        self.closed |= closed
        self.signal.set()

    def reset(self) -> None:
        """Forget the buffer before re-reading Redis; later deliveries land again."""
        self.buffer.clear()
        self.overflowed = False
        self.stale = False


@dataclass(slots=True)
class _Tracked:
    cursor: int
    subs: set[Subscription]


class StreamHub:
    """The shared blocking reader. All methods must run on one event loop.

    ``attach`` takes the subscriber's position: the hub reads that key from
    there on (or from its own position, if it already reads the key). Each
    XREAD blocks at most the shortest attached heartbeat interval.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        count: int = 100,
        retry: RetryPolicy | None = None,
        max_block_ms: int = 15_000,
        reader: aioredis.Redis | None = None,
    ) -> None:
        self._client = client
        # A dedicated reader never waits behind command traffic for a pooled
        # connection, and closing it interrupts a blocked XREAD at once.
        self._reader = reader
        self._wake_key = keys.hub_wake_key(prefix, uuid.uuid4().hex)
        self._wake_cursor = "0-0"
        self._count = count
        self._retry = retry or RetryPolicy()
        self._max_block_ms = max_block_ms
        self._tracked: dict[str, _Tracked] = {}
        self._reading: frozenset[str] = frozenset()
        self._wake_sent = False
        self._has_keys = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.reads = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(t.subs) for t in self._tracked.values())

    def subscribers(self, key: str) -> int:
        tracked = self._tracked.get(key)
        return len(tracked.subs) if tracked else 0

    def attach(self, sub: Subscription, after: int) -> None:
        tracked = self._tracked.get(sub.key)
        if tracked is None:
            tracked = self._tracked[sub.key] = _Tracked(cursor=after, subs=set())
        elif tracked.cursor > after:
            # Entries up to the hub's cursor were handed out before this reader came.
            sub.stale = True
        tracked.subs.add(sub)
        self._has_keys.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="runlane-stream-hub")

    def detach(self, sub: Subscription) -> None:
        tracked = self._tracked.get(sub.key)
        if tracked is not None:
            tracked.subs.discard(sub)
            if not tracked.subs:
                del self._tracked[sub.key]

    async def wake(self, key: str) -> None:
        """Make sure the next XREAD includes ``key``, interrupting a block without it."""
        if key in self._reading or self._wake_sent or self._task is None:
            return
        self._wake_sent = True
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    self._wake_key,
                    {keys.WAKE_FIELD: "1"},
                    maxlen=keys.WAKE_MAXLEN,
                    approximate=True,
                )
                pipe.expire(self._wake_key, int(keys.WAKE_TTL))
                await pipe.execute()
        except TRANSIENT_ERRORS as exc:
            # The block ends by itself within a heartbeat; readers re-check Redis then.
            self._wake_sent = False
            logger.warning("waking the stream hub failed: %r", exc)

    def end(self, key: str, *, removed: bool = False, closed: bool = False) -> None:
        for sub in list(self._tracked.get(key, _Tracked(0, set())).subs):
            sub.poke(removed=removed, closed=closed)

    async def close(self) -> None:
        for key in list(self._tracked):
            self.end(key, closed=True)
        self._tracked.clear()
        self._stopping = True
        self._has_keys.set()
        if self._task is not None:
            # redis-py may swallow a cancellation that lands mid-read; the flag ends the loop.
            self._task.cancel()
            if self._reader is not None:
                await self._reader.connection_pool.disconnect()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reader is not None:
            await self._reader.aclose()
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self._client.delete(self._wake_key)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            if not self._tracked:
                self._has_keys.clear()
                await self._has_keys.wait()
                continue
            streams: dict[Any, Any] = {self._wake_key: self._wake_cursor}
            for key, tracked in self._tracked.items():
                streams[key] = f"0-{tracked.cursor}"
            block_ms = min(
                [self._max_block_ms] + [s.block_ms for t in self._tracked.values() for s in t.subs]
            )
            self._reading = frozenset(streams)
            self._wake_sent = False
            try:
                async with asyncio.timeout(block_ms / 1000 + 10):
                    reader = self._reader or self._client
                    reply = await reader.xread(streams, count=self._count, block=block_ms)
            except TRANSIENT_ERRORS as exc:
                if self._stopping:
                    break
                failures += 1
                logger.warning("stream hub read failed (%d in a row): %r", failures, exc)
                self._reading = frozenset()
                # Readers check Redis themselves and give up after their own retries.
                for tracked in self._tracked.values():
                    for sub in tracked.subs:
                        sub.poke(stale=True)
                await asyncio.sleep(self._retry.delay(failures))
                continue
            failures = 0
            self.reads += 1
            try:
                self._fan_out(reply)
            except Exception:  # e.g. an entry this bridge did not write; readers re-read and raise
                logger.exception("stream hub could not hand out a read")
                for tracked in self._tracked.values():
                    for sub in tracked.subs:
                        sub.poke(stale=True)

    def _fan_out(self, reply: Any) -> None:
        for key, entries in iter_xread(reply):
            if not entries:
                continue
            if key == self._wake_key:
                self._wake_cursor = as_str(entries[-1][0])
                continue
            tracked = self._tracked.get(key)
            if tracked is None:
                continue
            fresh = [decode_entry(i, f) for i, f in entries if entry_seq(i) > tracked.cursor]
            if not fresh:
                continue
            tracked.cursor = int(fresh[-1].id)
            for sub in tracked.subs:
                sub.offer(fresh)


@dataclass(slots=True)
class Snapshot:
    """One consistent look at a run: entries after a position and what is known of the rest."""

    entries: list[StreamEvent]
    newest: int  # the newest id the run is known to have (0: none)
    exists: bool
    removed: bool  # cleanup() left its tombstone
    terminal: StreamEvent | None  # the copy kept in the meta hash


MAX_SEQ = 2**64 - 1  # Redis ids are unsigned 64-bit; a larger cursor is refused after the read


async def read_run(
    client: aioredis.Redis, run_keys: keys.RunKeys, after: int, *, count: int
) -> Snapshot:
    """Entries strictly after ``after`` (at most ``count``), read in one MULTI."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.xrange(run_keys.events, f"0-{min(after + 1, MAX_SEQ)}", "+", count=count)
        pipe.xrevrange(run_keys.events, "+", "-", count=1)
        pipe.hmget(
            run_keys.meta,
            [
                keys.META_SEQ,
                keys.META_TERMINAL_ID,
                keys.META_TERMINAL_EVENT,
                keys.META_TERMINAL_DATA,
            ],
        )
        pipe.exists(run_keys.removed)
        entries, tail, meta, removed = await pipe.execute()
    events = [decode_entry(i, f) for i, f in entries]
    seq, tid, te, td = meta
    newest = max(
        int(seq or 0),
        int(tid or 0),
        int(events[-1].id) if events else 0,
        entry_seq(tail[0][0]) if tail else 0,
    )
    terminal = None
    if tid is not None:
        payload = as_bytes(td or b"null")
        terminal = StreamEvent.from_payload(
            str(int(tid)), as_str(te or b"end"), payload, terminal=True
        )
    return Snapshot(events, newest, bool(seq is not None or tail), bool(removed), terminal)
