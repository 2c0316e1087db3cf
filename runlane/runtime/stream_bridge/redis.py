"""The Redis Streams bridge: one stream per run, shared by every process.

Writing (:mod:`.writer`). Entries get the explicit ids ``0-1``, ``0-2``, ...
from the writer's own sequence, so re-sending one is a no-op and a writer
whose sequence is stale gets StaleWriterError. A process becomes a run's
writer on its first write, which continues after the newest stored id (and
keeps numbering if the key is lost later, so readers see the hole). Publishes
are numbered in call order and sent in pipelined batches: whatever is issued
while a batch is in flight shares the next round trip. ``publish`` returns
once its entry is stored; with ``write_behind=True`` it returns once the entry
is queued, its errors surface on the run's next call and other processes see
it one batch later, while terminal calls, :meth:`RedisStreamBridge.flush` and
every read in this process still wait for the queue.

Reading (:mod:`.hub`). One shared reader per process blocks on every stream
with local subscribers, never with ``$``; each subscriber catches up with
XRANGE from its own cursor, then takes live entries from its bounded buffer,
and re-reads Redis itself whenever that buffer overflowed or shows a hole.
Holes in the sequence (trimming, a deleted key, a Redis restart) reach it as
StreamGap. Failed Redis calls are retried with backoff from the same
position; then the caller gets RedisUnavailableError.

Limits, as far as Redis allows (``StreamLimits`` lists the defaults):
``max_events_per_stream`` is ``MAXLEN ~`` (at least that many are kept);
``max_bytes_per_stream`` is enforced by the writing process over the entries
it wrote, with an exact ``MINID`` trim; ``max_active_streams`` and the
eviction policy count the runs this process writes to (or ended);
housekeeping (:meth:`~RedisStreamBridge.sweep`) covers those runs, judging
"no reader attached" by this process's readers; a run whose writer is gone
ends by key TTL (see :mod:`.keys`). ``get_stats`` is this process's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Unpack

import orjson
import redis.asyncio as aioredis

from runlane.exceptions import InvalidPayloadError
from runlane.runtime.stream_bridge import keys
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
    find_gap,
    parse_cursor,
    terminal_kind,
    validate_event_name,
)
from runlane.runtime.stream_bridge.exceptions import (
    BridgeClosedError,
    RedisUnavailableError,
    StaleWriterError,
    StreamBridgeError,
    StreamCapacityExceededError,
    StreamTerminatedError,
)
from runlane.runtime.stream_bridge.hub import (
    RetryPolicy,
    Snapshot,
    StreamHub,
    Subscription,
    as_str,
    read_run,
    with_retry,
)
from runlane.runtime.stream_bridge.writer import BatchWriter, RunWriter

__all__ = ["RedisStreamBridge", "RetryPolicy"]

logger = logging.getLogger(__name__)

READ_COUNT = 100  # entries per catch-up read and per hub read: one bounded batch in memory
_STATUS_BY_NAME = {
    "end": StreamStatus.ENDED,
    "cancel": StreamStatus.CANCELLED,
    "error": StreamStatus.ERRORED,
    DEAD_LETTER_EVENT: StreamStatus.ERRORED,
}


def _encode(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError as exc:
        raise InvalidPayloadError(
            f"stream event data is not JSON-serialisable ({exc}); publish only JSON values"
        ) from exc


class RedisStreamBridge(StreamBridge):
    """Per-run Redis Streams shared by every process; see :class:`StreamBridge`.

    ``client`` replaces the connection made from ``redis_url`` (the caller
    then owns it and closes it). The bridge's own pool holds at most
    ``max_connections`` connections however many subscribers attach: one for
    the shared reader, the rest for commands (its name, ``client_name``, shows
    in ``CLIENT LIST``). Each subscriber buffers up to ``subscriber_buffer``
    live events before it falls back to reading Redis itself. Redis calls are
    retried per ``retry``, each try bounded by ``command_timeout``. With
    ``write_behind``, at most ``max_unflushed`` queued events are accepted
    before ``publish`` waits.
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "runlane",
        client: aioredis.Redis | None = None,
        clock: Clock = time.monotonic,
        max_connections: int = 8,
        subscriber_buffer: int = 256,
        write_behind: bool = False,
        max_unflushed: int = 1024,
        retry: RetryPolicy | None = None,
        command_timeout: float = 10.0,
        **limits: Unpack[StreamLimitOptions],
    ) -> None:
        super().__init__(clock=clock, **limits)
        if max_connections < 2:
            raise ValueError("max_connections must be at least 2 (the reader plus commands)")
        self.client_name = f"runlane-bridge-{uuid.uuid4().hex[:12]}"
        self._own_client = client is None
        reader = None
        if client is None:
            # One connection for the hub's blocking read, the rest for commands.
            pool = aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=max_connections - 1,
                timeout=None,
                client_name=self.client_name,
            )
            client = aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
            # No socket timeout on the reader: its XREAD blocks up to a heartbeat
            # interval, longer than redis-py's default (5 s); the hub bounds it.
            reader_pool = aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=1,
                timeout=None,
                client_name=self.client_name,
                socket_timeout=None,
            )
            reader = aioredis.Redis.from_pool(reader_pool)
        self._client = client
        self._prefix = key_prefix
        self._retry = retry or RetryPolicy()
        self._timeout = command_timeout
        self._buffer = subscriber_buffer
        self._write_behind = write_behind
        self._max_unflushed = max_unflushed
        self._hub = StreamHub(
            client, key_prefix, count=READ_COUNT, retry=self._retry, reader=reader
        )
        self._out = BatchWriter(
            client, self.limits, clock, retry=self._retry, timeout=command_timeout
        )
        self._writers: dict[str, RunWriter] = {}
        self._readers = 0
        self._closed = False
        self._cleanup_task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._check_open()
        if self._cleanup_task is None:
            self._cleanup_task = asyncio.create_task(
                self._cleanup_loop(), name="runlane-redis-bridge-cleanup"
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
        with contextlib.suppress(Exception):  # queued writes get one bounded chance
            async with asyncio.timeout(self._timeout):
                await self._out.drain()
        await self._out.close()
        await self._hub.close()
        if self._own_client:
            await self._client.aclose()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.cleanup_interval)
            try:
                await self.sweep()
            except Exception:  # one failed pass must not end housekeeping for good
                logger.exception("redis stream bridge housekeeping pass failed")

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeClosedError()

    async def _redis(self, what: str, call: Any) -> Any:
        return await with_retry(call, self._retry, what, self._timeout)

    # --- writing ---------------------------------------------------------------

    async def publish(self, run_id: str, event: str, data: Any) -> str:
        self._check_open()
        validate_event_name(event)
        payload = _encode(data)
        writer = await self._writer(run_id)
        item = await self._out.append(writer, "d", event, payload)
        writer.last_publish_at = self.clock()
        writer.awaiting_since = None
        if self._write_behind:
            await self._out.backpressure(self._max_unflushed)
        else:
            await self._out.settle(writer, item)
        return str(item.seq)

    async def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any = None) -> str:
        self._check_open()
        _, name = terminal_kind(kind)
        return await self._terminate(run_id, name, _encode(data))

    async def _terminate(self, run_id: str, name: str, payload: bytes) -> str:
        writer = await self._writer(run_id)
        if writer.terminal_id is None:
            with contextlib.suppress(StreamTerminatedError):  # ended elsewhere: return that id
                await self._out.append(writer, "t", name, payload)
        await self._out.drain(writer)
        if isinstance(writer.error, StaleWriterError):
            raise writer.error
        if writer.terminal_id is None:
            writer.raise_error()
            raise StreamBridgeError(f"run {run_id!r}: the terminal entry was not stored")
        return writer.terminal_id

    async def flush(self, run_id: str | None = None) -> None:
        """Wait until this process's queued events (of ``run_id``, or all) are in Redis.

        Raises the run's write error, if its queued events could not be written.
        """
        self._check_open()
        writer = None if run_id is None else self._writers.get(run_id)
        await self._out.drain(writer)
        if writer is not None:
            writer.raise_error()

    async def _writer(self, run_id: str) -> RunWriter:
        writer = self._writers.get(run_id)
        if writer is not None:
            return writer
        if len(self._writers) >= self.limits.max_active_streams:
            ended = [w for w in self._writers.values() if w.ended_at is not None]
            if self.limits.stream_eviction_policy == "reject" or not ended:
                raise StreamCapacityExceededError(
                    f"this process holds {len(self._writers)} streams "
                    f"(max_active_streams={self.limits.max_active_streams}) "
                    f"and cannot open one for run {run_id!r}"
                )
            victim = min(ended, key=lambda w: max(w.ended_at or 0, w.last_reader_at or 0))
            await self._remove(victim.run_id)
        writer = self._writers.get(run_id)
        if writer is None:
            writer = RunWriter(run_id, keys.run_keys(self._prefix, run_id), self.clock())
            self._writers[run_id] = writer
        return writer

    async def mark_awaiting_input(self, run_id: str) -> None:
        """Extend the idle allowance of a run this process writes to (else a no-op)."""
        self._check_open()
        writer = self._writers.get(run_id)
        if writer is not None and writer.terminal_id is None:
            writer.awaiting_since = self.clock()

    # --- housekeeping ----------------------------------------------------------

    async def cleanup(self, run_id: str, *, delay: float = 0) -> None:
        self._check_open()
        if delay > 0:
            await asyncio.sleep(delay)
            if self._closed:
                return
        await self._remove(run_id)

    async def _remove(self, run_id: str) -> None:
        writer = self._writers.get(run_id)
        if writer is not None:
            await self._out.drain(writer)
        self._writers.pop(run_id, None)
        rk = keys.run_keys(self._prefix, run_id)

        async def remove() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(rk.events, rk.meta)
                pipe.set(rk.removed, b"1", ex=int(keys.TOMBSTONE_TTL))
                await pipe.execute()

        await self._redis(f"removing {rk.events!r}", remove)
        self._hub.end(rk.events, removed=True)

    async def sweep(self) -> None:
        self._check_open()
        now = self.clock()
        limits = self.limits
        for run_id, writer in list(self._writers.items()):
            if isinstance(writer.error, StaleWriterError):
                self._writers.pop(run_id, None)  # another process owns the run now
            elif writer.ended_at is None:
                reason = limits.dead_letter_reason(
                    now,
                    created_at=writer.created_at,
                    last_publish_at=writer.last_publish_at,
                    awaiting_since=writer.awaiting_since,
                )
                if reason is not None:
                    payload = _encode({"reason": reason})
                    try:
                        await self._terminate(run_id, DEAD_LETTER_EVENT, payload)
                    except StreamBridgeError as exc:
                        logger.warning("dead-lettering run %r failed: %r", run_id, exc)
            elif limits.terminal_expired(
                now,
                ended_at=writer.ended_at,
                last_reader_at=writer.last_reader_at,
                readers=self._hub.subscribers(writer.keys.events),
            ):
                await self._remove(run_id)

    # --- reading ---------------------------------------------------------------

    async def stream_exists(self, run_id: str) -> bool:
        return await self.get_status(run_id) is not None

    async def get_status(self, run_id: str) -> StreamStatus | None:
        self._check_open()
        writer = self._writers.get(run_id)
        if writer is not None:
            await self._out.drain(writer)
        rk = keys.run_keys(self._prefix, run_id)

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(rk.events, rk.meta)
                pipe.hget(rk.meta, keys.META_TERMINAL_EVENT)
                return await pipe.execute()

        found, name = await self._redis(f"reading {rk.meta!r}", read)
        if not found:
            return None
        if name is None:
            return StreamStatus.ACTIVE
        return _STATUS_BY_NAME.get(as_str(name), StreamStatus.ERRORED)

    async def latest_event_id(self, run_id: str) -> str | None:
        self._check_open()
        writer = self._writers.get(run_id)
        if writer is not None:
            await self._out.drain(writer)
        rk = keys.run_keys(self._prefix, run_id)
        seq = await self._redis(
            f"reading {rk.meta!r}", lambda: self._client.hget(rk.meta, keys.META_SEQ)
        )
        return None if seq is None else as_str(seq)

    async def _snapshot(self, rk: keys.RunKeys, after: int) -> Snapshot:
        return await self._redis(  # type: ignore[no-any-return]
            f"reading {rk.events!r}", lambda: read_run(self._client, rk, after, count=READ_COUNT)
        )

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
        rk = keys.run_keys(self._prefix, run_id)
        sub = Subscription(
            rk.events, capacity=self._buffer, block_ms=max(1, int(heartbeat_interval * 1000))
        )
        pending: deque[StreamEvent | StreamGap] = deque()
        seen = attached = False  # seen: the stream has existed while this reader looked
        fetch, heartbeat_due = True, False
        self._readers += 1
        self._touch(run_id)
        try:
            writer = self._writers.get(run_id)
            if writer is not None:
                await self._out.drain(writer)  # read this process's own writes
            while True:
                if self._closed or sub.closed:
                    yield CANCELLED_SENTINEL
                    return
                if sub.removed:
                    yield END_SENTINEL
                    return
                if pending:
                    item = pending.popleft()
                    if isinstance(item, StreamEvent):
                        position = int(item.id)
                    yield item
                    if isinstance(item, StreamEvent) and item.terminal:
                        return
                    continue
                last = position or 0
                if fetch or sub.stale or sub.overflowed:
                    sub.reset()  # before the read: what the hub delivers later is kept
                    fetch = False
                    try:
                        snap = await self._snapshot(rk, last)
                    except RedisUnavailableError:
                        if self._closed:
                            continue  # closing took the connections away
                        raise
                    tail_id = last
                    if snap.exists:
                        if not seen:
                            check_cursor(run_id, position, snap.newest)
                            seen = True
                        elif snap.newest < last:  # removed and recreated: not our stream
                            yield END_SENTINEL
                            return
                        batch = snap.entries
                        if not batch and snap.terminal is not None:
                            if int(snap.terminal.id) <= last:
                                return  # the cursor already covers the terminal entry
                            batch = [snap.terminal]  # the stream key is gone, its copy is not
                        if batch:
                            gap = find_gap(run_id, position, int(batch[0].id), snap.newest)
                            if gap is not None:
                                pending.append(gap)
                            pending.extend(batch)
                            tail_id = int(batch[-1].id)
                        fetch = len(snap.entries) == READ_COUNT
                    elif snap.removed and seen:
                        yield END_SENTINEL
                        return
                    if not attached and not fetch:  # caught up: live entries via the hub
                        attached = True
                        self._hub.attach(sub, tail_id)
                        await self._hub.wake(rk.events)
                    if heartbeat_due:
                        heartbeat_due = False
                        if not pending:
                            yield HEARTBEAT_SENTINEL
                    continue
                if sub.buffer:
                    event = sub.buffer.popleft()
                    seq = int(event.id)
                    if seq == last + 1:
                        pending.append(event)
                    elif seq > last + 1:
                        fetch = True  # a hole: a read from Redis tells whether it is a gap
                    continue
                sub.signal.clear()
                try:
                    async with asyncio.timeout(heartbeat_interval):
                        await sub.signal.wait()
                except TimeoutError:
                    fetch = heartbeat_due = True  # also re-checks status, key and tombstone
        finally:
            self._readers -= 1
            self._hub.detach(sub)
            self._touch(run_id)

    def _touch(self, run_id: str) -> None:
        writer = self._writers.get(run_id)
        if writer is not None:
            writer.last_reader_at = self.clock()

    # --- introspection ---------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """This process's view: the runs it writes to (or ended), and its own readers.

        Events and bytes are what this process wrote and retention keeps (an
        estimate under ``MAXLEN ~``). Extra keys: ``unflushed_events`` (queued,
        not yet in Redis) and ``hub_reads`` (blocking reads the shared reader made).
        """
        writers = self._writers.values()
        terminal = sum(w.terminal_id is not None for w in writers)
        return {
            "total_streams": len(self._writers),
            "active_streams": len(self._writers) - terminal,
            "terminal_streams": terminal,
            "total_events": sum(len(w.sizes) for w in writers) + terminal,
            "total_bytes": sum(w.nbytes for w in writers),
            "total_subscribers": self._readers,
            "unflushed_events": self._out.queued,
            "hub_reads": self._hub.reads,
            "closed": self._closed,
        }
