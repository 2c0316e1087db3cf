"""The Redis Streams bridge: one stream per run, shared by every process.

Writing. Entries get the explicit ids ``0-1``, ``0-2``, ...: one Lua script
checks the writer's sequence against the run's fence (``meta.seq``), appends
with ``MAXLEN ~`` and refreshes the TTL. Re-sending an entry that is already
stored is a no-op, so writes are retried freely; a writer whose next id is
taken by different content gets StaleWriterError. A process becomes a run's
writer on its first write, which is durable before ``publish`` returns and
continues after the newest stored id; later publishes are queued in order and
sent in pipelined batches (one round trip per batch, not per event).
Failures of a queued batch surface on the run's next call; terminal calls,
:meth:`RedisStreamBridge.flush` and every read in this process wait for the
queue first, so a process always reads its own writes.

Reading. One shared reader per process (:mod:`.hub`) blocks on all streams
with local subscribers; each subscriber catches up with XRANGE from its own
cursor, then takes live entries from its bounded buffer. Holes in the
sequence (trimming, a deleted key, a Redis restart) reach it as StreamGap.

Limits, as far as Redis allows (``StreamLimits`` lists the defaults):
``max_events_per_stream`` is ``MAXLEN ~`` (at least that many are kept);
``max_bytes_per_stream`` is enforced by the writing process over the entries
it wrote, with an exact ``MINID`` trim; ``max_active_streams`` and the
eviction policy count the runs this process writes to; housekeeping
(:meth:`~RedisStreamBridge.sweep`) covers those runs too, and a run whose
writer is gone ends by key TTL (see :mod:`.keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Unpack

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

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
    StaleWriterError,
    StreamBridgeError,
    StreamCapacityExceededError,
    StreamTerminatedError,
)
from runlane.runtime.stream_bridge.hub import (
    TRANSIENT_ERRORS,
    RedisUnavailableError,
    RetryPolicy,
    StreamHub,
    Subscription,
    as_bytes,
    as_str,
    decode_entry,
)

__all__ = ["RedisStreamBridge", "RedisUnavailableError", "RetryPolicy"]

logger = logging.getLogger(__name__)

READ_COUNT = 100
_STATUS_BY_NAME = {
    "end": StreamStatus.ENDED,
    "cancel": StreamStatus.CANCELLED,
    "error": StreamStatus.ERRORED,
    DEAD_LETTER_EVENT: StreamStatus.ERRORED,
}

# KEYS: events, meta, tombstone. ARGV: base (id before the first entry; -1: after
# the newest stored id), maxlen, minid (0: none), active ttl ms, terminal ttl ms,
# then flag ('d' data, 't' terminal), event, payload per entry.
# Reply {code, last id written or confirmed, n}: ok (n: terminal id or 0),
# stale (n: newest stored id), ended (n: the existing terminal id).
_APPEND = """
local events, meta = KEYS[1], KEYS[2]
local top = tonumber(redis.call('HGET', meta, 'seq') or '0')
local tid = tonumber(redis.call('HGET', meta, 'tid') or '0')
local seq = tonumber(ARGV[1])
if seq < 0 then
  if redis.call('EXISTS', events) == 1 then
    local info = redis.call('XINFO', 'STREAM', events)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local last = tonumber(string.match(info[i + 1], '-(%d+)$'))
        if last > top then top = last end
      end
    end
  end
  seq = top
end
local function stored(id, flag, ev, payload)
  local got = redis.call('XRANGE', events, id, id)
  if #got == 0 then
    return flag == 't' and '0-' .. tid == id and redis.call('HGET', meta, 'te') == ev
      and redis.call('HGET', meta, 'td') == payload
  end
  local f, fe, fd, ft = got[1][2], nil, nil, false
  for i = 1, #f, 2 do
    if f[i] == 'e' then fe = f[i + 1] elseif f[i] == 'd' then fd = f[i + 1]
    elseif f[i] == 't' then ft = true end
  end
  return fe == ev and fd == payload and ft == (flag == 't')
end
local code, n, wrote = 'ok', 0, false
for i = 6, #ARGV, 3 do
  local flag, ev, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = '0-' .. (seq + 1)
  if seq + 1 <= top then
    if not stored(id, flag, ev, payload) then
      if tid > 0 then code, n = 'ended', tid else code, n = 'stale', top end
      break
    end
  elseif tid > 0 then
    code, n = 'ended', tid
    break
  else
    local r
    if flag == 't' then
      r = redis.pcall('XADD', events, id, 'e', ev, 'd', payload, 't', '1')
    else
      r = redis.pcall('XADD', events, 'MAXLEN', '~', ARGV[2], id, 'e', ev, 'd', payload)
    end
    if type(r) == 'table' and r.err then
      code, n = 'stale', top
      break
    end
    top, wrote = seq + 1, true
    if flag == 't' then
      tid = top
      redis.call('HSET', meta, 'tid', tid, 'te', ev, 'td', payload)
    end
  end
  seq = seq + 1
end
if wrote then
  redis.call('HSET', meta, 'seq', top)
  if tonumber(ARGV[3]) > 0 then redis.call('XTRIM', events, 'MINID', '0-' .. ARGV[3]) end
  redis.call('DEL', KEYS[3])
  local ttl = ARGV[4]
  if tid > 0 then ttl = ARGV[5] end
  redis.call('PEXPIRE', events, ttl)
  redis.call('PEXPIRE', meta, ttl)
end
if code == 'ok' then n = tid end
return {code, seq, n}
"""


def _encode(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError as exc:
        raise InvalidPayloadError(
            f"stream event data is not JSON-serialisable ({exc}); publish only JSON values"
        ) from exc


@dataclass(slots=True)
class _Item:
    seq: int | None  # None: the run's first write here, numbered by Redis after its newest id
    flag: str
    event: str
    payload: bytes
    written: bool = False


@dataclass(slots=True)
class _Batch:
    runs: dict[str, list[_Item]] = field(default_factory=dict)
    size: int = 0
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _Writer:
    """This process's view of a run it writes to (or ended)."""

    __slots__ = (
        "awaiting_since", "batch", "created_at", "ended_at", "error", "gate", "keys",
        "last_publish_at", "last_reader_at", "minid", "nbytes", "seq", "sizes", "terminal_id",
        "waiters",
    )

    def __init__(self, run_keys: keys.RunKeys, now: float) -> None:
        self.keys = run_keys
        self.seq: int | None = None
        self.terminal_id: str | None = None
        self.error: StreamBridgeError | None = None
        self.gate = asyncio.Lock()
        self.waiters = 0
        self.batch: _Batch | None = None
        self.created_at = self.last_publish_at = now
        self.awaiting_since: float | None = None
        self.ended_at: float | None = None
        self.last_reader_at: float | None = None
        self.sizes: deque[tuple[int, int]] = deque()
        self.nbytes = 0
        self.minid = 0


@dataclass(slots=True)
class _Snapshot:
    entries: list[StreamEvent]
    newest: int
    exists: bool
    removed: bool
    terminal: StreamEvent | None


class RedisStreamBridge(StreamBridge):
    """Per-run Redis Streams shared by every process; see :class:`StreamBridge`.

    ``client`` replaces the connection made from ``redis_url`` (the caller
    then owns it and closes it). The bridge's own pool holds at most
    ``max_connections`` connections whatever the number of subscribers: one
    for the shared reader, the rest for commands. Each subscriber buffers up
    to ``subscriber_buffer`` live events before falling back to reading Redis
    itself. A Redis call is retried per ``retry`` from the same position;
    then the caller gets RedisUnavailableError. At most ``max_unflushed``
    queued events are accepted before ``publish`` waits for Redis.
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
        if client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                redis_url, max_connections=max_connections, timeout=None,
                client_name=self.client_name,
            )
            client = aioredis.Redis(connection_pool=pool)
        self._client = client
        self._prefix = key_prefix
        self._retry = retry or RetryPolicy()
        self._timeout = command_timeout
        self._buffer = subscriber_buffer
        self._max_unflushed = max_unflushed
        lim = self.limits
        self._active_ttl_ms = int(1000 * keys.active_ttl(
            lim.max_stream_age, lim.hitl_extended_timeout, lim.active_no_publish_timeout
        ))
        self._terminal_ttl_ms = int(1000 * keys.terminal_ttl(lim.terminal_retention_ttl))
        self._hub = StreamHub(client, key_prefix, count=READ_COUNT, retry=self._retry)
        self._writers: dict[str, _Writer] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # terminal runs, least recent first
        self._open: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sha: str | None = None
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
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await self._drain(None)
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
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

    # --- writing ---------------------------------------------------------------

    async def publish(self, run_id: str, event: str, data: Any) -> str:
        self._check_open()
        validate_event_name(event)
        payload = _encode(data)
        writer = await self._writer(run_id)
        item = await self._append(run_id, writer, "d", event, payload)
        writer.last_publish_at = self.clock()
        writer.awaiting_since = None
        if self._open is not None and self._open.size >= self._max_unflushed:
            await asyncio.shield(self._open.done)
        return str(item.seq)

    async def publish_terminal(self, run_id: str, kind: StreamStatus, data: Any = None) -> str:
        self._check_open()
        _, name = terminal_kind(kind)
        return await self._terminate(run_id, name, _encode(data))

    async def _terminate(self, run_id: str, name: str, payload: bytes) -> str:
        writer = await self._writer(run_id)
        if writer.terminal_id is None:
            with contextlib.suppress(StreamTerminatedError):
                await self._append(run_id, writer, "t", name, payload)
        await self._drain(writer)
        if writer.terminal_id is None:
            raise writer.error or StreamBridgeError(f"run {run_id!r}: terminal entry not written")
        if isinstance(writer.error, StaleWriterError):
            raise writer.error
        return writer.terminal_id

    async def flush(self, run_id: str | None = None) -> None:
        """Wait until this process's queued events (of ``run_id``, or all) are in Redis.

        Raises the run's write error, if its queued events could not be written.
        """
        self._check_open()
        writer = None if run_id is None else self._writers.get(run_id)
        await self._drain(writer)
        if writer is not None and writer.error is not None:
            self._raise_error(writer)

    def _raise_error(self, writer: _Writer) -> None:
        error = writer.error
        if error is None:
            return
        if isinstance(error, RedisUnavailableError):
            writer.error = None  # reported once; the next write goes on, leaving a visible gap
        raise error

    async def _writer(self, run_id: str) -> _Writer:
        writer = self._writers.get(run_id)
        if writer is not None:
            return writer
        if len(self._writers) >= self.limits.max_active_streams:
            if self.limits.stream_eviction_policy == "reject" or not self._ended:
                raise StreamCapacityExceededError(
                    f"this process writes to {len(self._writers)} streams "
                    f"(max_active_streams={self.limits.max_active_streams}) "
                    f"and cannot open one for run {run_id!r}"
                )
            await self._remove(next(iter(self._ended)))
        writer = self._writers.get(run_id)
        if writer is None:
            writer = self._writers[run_id] = _Writer(
                keys.run_keys(self._prefix, run_id), self.clock()
            )
        return writer

    async def _append(
        self, run_id: str, writer: _Writer, flag: str, event: str, payload: bytes
    ) -> _Item:
        self._raise_error(writer)
        if writer.seq is not None and not writer.waiters:
            return self._enqueue(run_id, writer, flag, event, payload)
        # The first write learns the run's newest id from Redis; later ones queue
        # behind it on the lock, in call order.
        writer.waiters += 1
        try:
            await writer.gate.acquire()
        finally:
            writer.waiters -= 1
        try:
            self._raise_error(writer)
            if writer.seq is not None:
                return self._enqueue(run_id, writer, flag, event, payload)
            item = self._enqueue(run_id, writer, flag, event, payload)
            await self._drain(writer)
            if item.written:
                return item
            self._raise_error(writer)
            raise StreamBridgeError(f"run {run_id!r}: the first write was not stored")
        finally:
            writer.gate.release()

    def _enqueue(
        self, run_id: str, writer: _Writer, flag: str, event: str, payload: bytes
    ) -> _Item:
        if writer.terminal_id is not None:
            raise StreamTerminatedError(
                f"run {run_id!r} already ended (terminal id {writer.terminal_id}); "
                "nothing more can be published"
            )
        seq = None if writer.seq is None else writer.seq + 1
        item = _Item(seq, flag, event, payload)
        if seq is not None:
            writer.seq = seq
            if flag == "t":
                writer.terminal_id = str(seq)
            else:
                self._account(writer, seq, len(payload))
        if flag == "t":
            writer.ended_at = self.clock()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
        batch.runs.setdefault(run_id, []).append(item)
        batch.size += 1
        writer.batch = batch
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="runlane-redis-writer")
        return item

    def _account(self, writer: _Writer, seq: int, size: int) -> None:
        limits = self.limits
        writer.sizes.append((seq, size))
        writer.nbytes += size
        sizes = writer.sizes
        while sizes and (
            len(sizes) > limits.max_events_per_stream or writer.nbytes > limits.max_bytes_per_stream
        ):
            over_bytes = writer.nbytes > limits.max_bytes_per_stream
            writer.nbytes -= sizes.popleft()[1]
            if over_bytes:
                writer.minid = sizes[0][0] if sizes else seq + 1

    async def _drain(self, writer: _Writer | None) -> None:
        batch = self._open if writer is None else writer.batch
        if writer is None and batch is None and self._flusher is not None:
            await asyncio.shield(self._flusher)
        elif batch is not None and not batch.done.done():
            await asyncio.shield(batch.done)

    async def _flush_loop(self) -> None:
        try:
            while self._open is not None:
                batch, self._open = self._open, None
                try:
                    await self._send(batch)
                except Exception as exc:  # a writer must never die with entries queued
                    logger.exception("writing a batch to Redis failed")
                    self._fail(list(batch.runs.items()), StreamBridgeError(repr(exc)))
                finally:
                    batch.done.set_result(None)
        finally:
            self._flusher = None

    def _fail(self, runs: list[tuple[str, list[_Item]]], error: StreamBridgeError) -> None:
        for run_id, _ in runs:
            if (writer := self._writers.get(run_id)) is not None:
                writer.error = writer.error or error

    async def _send(self, batch: _Batch) -> None:
        runs = list(batch.runs.items())
        failures = 0
        while True:
            try:
                replies = await self._execute(runs)
                break
            except NoScriptError:
                self._sha = None
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures >= self._retry.attempts:
                    self._fail(runs, RedisUnavailableError(f"writing to Redis failed: {exc!r}"))
                    return
                await asyncio.sleep(self._retry.delay(failures))
        for (run_id, items), reply in zip(runs, replies, strict=True):
            self._apply(run_id, items, reply)

    async def _execute(self, runs: list[tuple[str, list[_Item]]]) -> list[Any]:
        async with asyncio.timeout(self._timeout):
            if self._sha is None:
                self._sha = str(await self._client.script_load(_APPEND))
            async with self._client.pipeline(transaction=False) as pipe:
                for run_id, items in runs:
                    writer = self._writers.get(run_id)
                    rk = keys.run_keys(self._prefix, run_id) if writer is None else writer.keys
                    args: list[Any] = [
                        -1 if items[0].seq is None else items[0].seq - 1,
                        self.limits.max_events_per_stream,
                        0 if writer is None else writer.minid,
                        self._active_ttl_ms,
                        self._terminal_ttl_ms,
                    ]
                    for item in items:
                        args += (item.flag, item.event, item.payload)
                    pipe.evalsha(self._sha, 3, rk.events, rk.meta, rk.removed, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, NoScriptError):
                raise reply
        return replies

    def _apply(self, run_id: str, items: list[_Item], reply: Any) -> None:
        writer = self._writers.get(run_id)
        if isinstance(reply, Exception):
            logger.error("append to run %r failed: %r", run_id, reply)
            if writer is not None:
                writer.error = StreamBridgeError(f"run {run_id!r}: append failed: {reply}")
            return
        code, last, n = as_str(reply[0]), int(reply[1]), int(reply[2])
        first = items[0]
        if first.seq is None:  # the first write: Redis chose the id
            if code == "ok":
                first.seq = last
            if writer is not None:
                writer.seq = last if code == "ok" else max(last, n)
                if code == "ok" and first.flag == "d":
                    self._account(writer, last, len(first.payload))
        for item in items:
            item.written = item.seq is not None and item.seq <= last
        if writer is None:
            return
        if code == "ok" and n:
            writer.terminal_id = str(n)
            self._ended[run_id] = None
        elif code == "ended":
            writer.terminal_id = str(n)
            writer.ended_at = writer.ended_at or self.clock()
            self._ended[run_id] = None
            writer.error = StreamTerminatedError(
                f"run {run_id!r} was ended elsewhere (terminal id {n}); "
                "nothing more can be published"
            )
        elif code == "stale":
            writer.terminal_id = None
            writer.error = StaleWriterError(
                f"run {run_id!r}: id {last + 1} is already taken (newest stored id {n}); "
                "another writer owns this run"
            )

    async def mark_awaiting_input(self, run_id: str) -> None:
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
            await self._drain(writer)
        self._writers.pop(run_id, None)
        self._ended.pop(run_id, None)
        rk = keys.run_keys(self._prefix, run_id)
        async with asyncio.timeout(self._timeout), self._client.pipeline(
            transaction=True
        ) as pipe:
            pipe.delete(rk.events, rk.meta)
            pipe.set(rk.removed, b"1", ex=int(keys.TOMBSTONE_TTL))
            await pipe.execute()
        self._hub.end(rk.events, removed=True)

    async def sweep(self) -> None:
        self._check_open()
        now = self.clock()
        limits = self.limits
        for run_id, writer in list(self._writers.items()):
            if isinstance(writer.error, StaleWriterError):
                self._writers.pop(run_id, None)  # another process owns the run now
                self._ended.pop(run_id, None)
            elif writer.ended_at is None:
                reason = limits.dead_letter_reason(
                    now,
                    created_at=writer.created_at,
                    last_publish_at=writer.last_publish_at,
                    awaiting_since=writer.awaiting_since,
                )
                if reason is not None:
                    with contextlib.suppress(StreamBridgeError):
                        payload = _encode({"reason": reason})
                        await self._terminate(run_id, DEAD_LETTER_EVENT, payload)
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
            await self._drain(writer)
        rk = keys.run_keys(self._prefix, run_id)
        async with asyncio.timeout(self._timeout), self._client.pipeline(
            transaction=True
        ) as pipe:
            pipe.exists(rk.events, rk.meta)
            pipe.hget(rk.meta, keys.META_TERMINAL_EVENT)
            found, name = await pipe.execute()
        if not found:
            return None
        if name is None:
            return StreamStatus.ACTIVE
        return _STATUS_BY_NAME.get(as_str(name), StreamStatus.ERRORED)

    async def _snapshot(self, rk: keys.RunKeys, after: int) -> _Snapshot | None:
        """One consistent read of a run (None when the bridge closed meanwhile)."""
        failures = 0
        while not self._closed:
            try:
                async with asyncio.timeout(self._timeout), self._client.pipeline(
                    transaction=True
                ) as pipe:
                    pipe.xrange(rk.events, f"0-{after + 1}", "+", count=READ_COUNT)
                    pipe.xrevrange(rk.events, "+", "-", count=1)
                    pipe.hmget(rk.meta, [keys.META_SEQ, keys.META_TERMINAL_ID,
                                         keys.META_TERMINAL_EVENT, keys.META_TERMINAL_DATA])
                    pipe.exists(rk.removed)
                    entries, tail, meta, removed = await pipe.execute()
                break
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures >= self._retry.attempts:
                    raise RedisUnavailableError(
                        f"reading {rk.events!r} failed {failures} times: {exc!r}"
                    ) from exc
                await asyncio.sleep(self._retry.delay(failures))
        else:
            return None
        events = [decode_entry(i, f) for i, f in entries]
        seq, tid, te, td = meta
        newest = max(int(seq or 0), int(tid or 0), int(events[-1].id) if events else 0,
                     int(decode_entry(*tail[0]).id) if tail else 0)
        terminal = None
        if tid is not None:
            payload = as_bytes(td or b"null")
            terminal = StreamEvent(
                str(int(tid)), as_str(te or b"end"), orjson.loads(payload), payload,
                terminal=True,
            )
        return _Snapshot(events, newest, bool(seq is not None or tail), bool(removed), terminal)

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
        seen = attached = False
        fetch, heartbeat_due = True, False
        self._readers += 1
        self._touch(run_id)
        try:
            writer = self._writers.get(run_id)
            if writer is not None:
                await self._drain(writer)
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
                    sub.reset()
                    fetch = False
                    snap = await self._snapshot(rk, last)
                    if snap is None:
                        continue
                    tail_id = last
                    if snap.exists:
                        if not seen:
                            check_cursor(run_id, position, snap.newest)
                            seen = True
                        batch = snap.entries
                        if not batch and snap.terminal is not None:
                            if int(snap.terminal.id) <= last:
                                return  # the cursor already covers the terminal entry
                            batch = [snap.terminal]  # the stream key is gone; its copy is not
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
                    if not attached and not fetch:
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
                        fetch = True  # a hole: Redis tells whether it is a gap
                    continue
                sub.signal.clear()
                try:
                    async with asyncio.timeout(heartbeat_interval):
                        await sub.signal.wait()
                except TimeoutError:
                    fetch = heartbeat_due = True
        finally:
            self._readers -= 1
            self._hub.detach(sub)
            self._touch(run_id)

    def _touch(self, run_id: str) -> None:
        writer = self._writers.get(run_id)
        if writer is not None:
            writer.last_reader_at = self.clock()
            if run_id in self._ended:
                self._ended.move_to_end(run_id)

    # --- introspection ---------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """This process's view: the runs it writes to, and its own subscribers.

        Extra keys: ``unflushed_events`` (queued, not yet in Redis) and
        ``hub_reads`` (blocking reads the shared reader has completed).
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
            "unflushed_events": self._open.size if self._open is not None else 0,
            "hub_reads": self._hub.reads,
            "closed": self._closed,
        }
