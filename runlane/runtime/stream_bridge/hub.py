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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runlane.runtime.stream_bridge import keys
from runlane.runtime.stream_bridge.base import StreamEvent
from runlane.runtime.stream_bridge.exceptions import StreamBridgeError

__all__ = [
    "TRANSIENT_ERRORS",
    "as_bytes",
    "as_str",
    "entry_seq",
    "RedisUnavailableError",
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


class RedisUnavailableError(StreamBridgeError):
    """Redis did not answer after all retries; the stream position is unchanged.

    Check that Redis is reachable, then resume with the last event id received.
    """


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff: ``attempts`` tries, ``base * 2**n`` apart, at most ``cap``."""

    attempts: int = 5
    base: float = 0.05
    cap: float = 2.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


def as_bytes(value: Any) -> bytes:
    """A reply value as bytes, whether or not the client decodes responses."""
    return value if isinstance(value, bytes) else str(value).encode()


def as_str(value: Any) -> str:
    """A reply value as str, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_seq(entry_id: Any) -> int:
    """The run-local sequence number of a stream entry id ``0-<seq>``."""
    return int(as_str(entry_id).partition("-")[2])


def decode_entry(entry_id: Any, fields: Any) -> StreamEvent:
    """Turn one stream entry into a StreamEvent (the payload is decoded once, here)."""
    get = fields.get
    payload = as_bytes(get(b"d", get("d", b"null")))
    terminal = get(b"t", get("t")) is not None
    return StreamEvent(
        id=str(entry_seq(entry_id)),
        event=as_str(get(b"e", get("e", b""))),
        data=orjson.loads(payload),
        payload=payload,
        terminal=terminal,
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
        "block_ms", "buffer", "capacity", "closed", "key", "overflowed", "removed",
        "signal", "stale",
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
    ) -> None:
        self._client = client
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
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=keys.WAKE_MAXLEN, approximate=True)
            pipe.expire(self._wake_key, int(keys.WAKE_TTL))
            await pipe.execute()

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
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
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
                [self._max_block_ms]
                + [s.block_ms for t in self._tracked.values() for s in t.subs]
            )
            self._reading = frozenset(streams)
            self._wake_sent = False
            try:
                async with asyncio.timeout(block_ms / 1000 + 10):
                    reply = await self._client.xread(streams, count=self._count, block=block_ms)
            except TRANSIENT_ERRORS as exc:
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
            self._fan_out(reply)

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
