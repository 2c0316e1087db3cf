"""The write side of the Redis stream bridge: ordered, batched, idempotent appends.

Every append goes through one Lua script (below) that fences the writer's
sequence against the run's ``meta.seq``: an entry whose id is already stored
with the same content is confirmed, not written again (so any batch may be
re-sent after an ambiguous failure), and one whose id holds other content
means another writer owns the run. One task per bridge sends whatever was
queued while the previous round trip was in flight, as one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from runlane.runtime.stream_bridge import keys
from runlane.runtime.stream_bridge.base import Clock, StreamLimits
from runlane.runtime.stream_bridge.exceptions import (
    BridgeClosedError,
    RedisUnavailableError,
    StaleWriterError,
    StreamBridgeError,
    StreamTerminatedError,
)
from runlane.runtime.stream_bridge.hub import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    as_str,
)

__all__ = ["APPEND_SCRIPT", "Batch", "BatchWriter", "Item", "RunWriter"]

logger = logging.getLogger(__name__)

# KEYS: events, meta, tombstone. ARGV: base (id before the first entry; -1: after
# the newest stored id), maxlen, minid (0: none), active ttl ms, terminal ttl ms,
# the writer's token (names the remembered base of a -1 write), then flag ('d' data,
# 't' terminal), event, payload per entry.
# Reply {code, last id written or confirmed, n}: ok (n: terminal id or 0),
# stale (n: newest stored id), ended (n: the existing terminal id).
APPEND_SCRIPT = string.Template("""
local events, meta = KEYS[1], KEYS[2]
local top = tonumber(redis.call('HGET', meta, ${seq}) or '0')
local tid = tonumber(redis.call('HGET', meta, ${tid}) or '0')
local seq = tonumber(ARGV[1])
local base_field = ${bp} .. ARGV[6]
if seq < 0 then
  seq = tonumber(redis.call('HGET', meta, base_field) or '-1')
end
if seq < 0 then
  if redis.call('EXISTS', events) == 1 then
    local info = redis.call('XINFO', 'STREAM', events)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local last = tonumber(string.match(info[i + 1], '-(%d+)$$'))
        if last > top then top = last end
      end
    end
  end
  seq = top
  redis.call('HSET', meta, base_field, seq)
end
local function stored(id, flag, ev, payload)
  local got = redis.call('XRANGE', events, id, id)
  if #got == 0 then
    return flag == 't' and '0-' .. tid == id and redis.call('HGET', meta, ${te}) == ev
      and redis.call('HGET', meta, ${td}) == payload
  end
  local f, fe, fd, ft = got[1][2], nil, nil, false
  for i = 1, #f, 2 do
    if f[i] == ${e} then fe = f[i + 1] elseif f[i] == ${d} then fd = f[i + 1]
    elseif f[i] == ${t} then ft = true end
  end
  return fe == ev and fd == payload and ft == (flag == 't')
end
local code, n, wrote = 'ok', 0, false
for i = 7, #ARGV, 3 do
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
      r = redis.pcall('XADD', events, id, ${e}, ev, ${d}, payload, ${t}, '1')
    else
      r = redis.pcall('XADD', events, 'MAXLEN', '~', ARGV[2], id, ${e}, ev, ${d}, payload)
    end
    if type(r) == 'table' and r.err then
      code, n = 'stale', top
      break
    end
    top, wrote = seq + 1, true
    if flag == 't' then
      tid = top
      redis.call('HSET', meta, ${tid}, tid, ${te}, ev, ${td}, payload)
    end
  end
  seq = seq + 1
end
if wrote then
  redis.call('HSET', meta, ${seq}, top)
  if tonumber(ARGV[3]) > 0 then redis.call('XTRIM', events, 'MINID', '0-' .. ARGV[3]) end
  redis.call('DEL', KEYS[3])
  local ttl = ARGV[4]
  if tid > 0 then ttl = ARGV[5] end
  redis.call('PEXPIRE', events, ttl)
  redis.call('PEXPIRE', meta, ttl)
end
if code == 'ok' then n = tid end
return {code, seq, n}
""").substitute(
    seq=repr(keys.META_SEQ),
    tid=repr(keys.META_TERMINAL_ID),
    te=repr(keys.META_TERMINAL_EVENT),
    td=repr(keys.META_TERMINAL_DATA),
    e=repr(keys.ENTRY_EVENT),
    d=repr(keys.ENTRY_DATA),
    t=repr(keys.ENTRY_TERMINAL),
    bp=repr(keys.META_BASE_PREFIX),
)


@dataclass(slots=True)
class Item:
    """One queued entry; ``seq`` None: the run's first write here, numbered by Redis."""

    seq: int | None
    flag: str  # "d" data, "t" terminal
    event: str
    payload: bytes
    batch: Batch | None = None
    written: bool = False


@dataclass(slots=True)
class Batch:
    runs: dict[str, tuple[RunWriter, list[Item]]] = field(default_factory=dict)
    size: int = 0
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RunWriter:
    """This process's state for one run it writes to (or ended)."""

    __slots__ = (
        "awaiting_since",
        "backlog",
        "batch",
        "created_at",
        "ended_at",
        "error",
        "keys",
        "last_publish_at",
        "last_reader_at",
        "minid",
        "nbytes",
        "run_id",
        "seq",
        "sizes",
        "terminal_id",
        "token",
    )

    def __init__(self, run_id: str, run_keys: keys.RunKeys, now: float) -> None:
        self.run_id = run_id
        self.keys = run_keys
        self.seq: int | None = None  # newest id assigned here; None until the first write
        self.token = uuid.uuid4().hex
        self.terminal_id: str | None = None
        self.error: StreamBridgeError | None = None
        # Calls made while the first write is in flight, with the futures they wait on.
        self.backlog: list[tuple[str, str, bytes, asyncio.Future[Item]]] | None = None
        self.batch: Batch | None = None  # the newest batch holding this run's entries
        self.created_at = self.last_publish_at = now
        self.awaiting_since: float | None = None
        self.ended_at: float | None = None
        self.last_reader_at: float | None = None
        self.sizes: deque[tuple[int, int]] = deque()  # (id, payload bytes) of retained data
        self.nbytes = 0
        self.minid = 0  # entries below this id are over the byte limit

    def raise_error(self) -> None:
        """Raise the run's pending write error; an outage is reported only once."""
        error = self.error
        if error is None:
            return
        if isinstance(error, RedisUnavailableError):
            self.error = None  # the next write goes on, and readers see the hole as a gap
        raise error


class BatchWriter:
    """Queues entries in call order and sends them in pipelined batches."""

    def __init__(
        self,
        client: aioredis.Redis,
        limits: StreamLimits,
        clock: Clock,
        *,
        retry: RetryPolicy,
        timeout: float,
    ) -> None:
        self._client = client
        self._limits = limits
        self._clock = clock
        self._retry = retry
        self._timeout = timeout
        self._active_ttl_ms = int(
            1000
            * keys.active_ttl(
                limits.max_stream_age,
                limits.hitl_extended_timeout,
                limits.active_no_publish_timeout,
            )
        )
        self._terminal_ttl_ms = int(1000 * keys.terminal_ttl(limits.terminal_retention_ttl))
        self._open: Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._sha: str | None = None

    @property
    def queued(self) -> int:
        return self._open.size if self._open is not None else 0

    async def append(self, writer: RunWriter, flag: str, event: str, payload: bytes) -> Item:
        """Queue an entry (the run's first write here waits until it is stored)."""
        writer.raise_error()
        if writer.seq is not None:
            return self._enqueue(writer, flag, event, payload)
        if writer.backlog is not None:
            # The first write is learning the run's newest id: line up behind it.
            ticket: asyncio.Future[Item] = asyncio.get_running_loop().create_future()
            writer.backlog.append((flag, event, payload, ticket))
            return await ticket
        writer.backlog = []
        try:
            item = self._enqueue(writer, flag, event, payload)
            await self.drain(writer)
            if not item.written:
                writer.raise_error()
                raise StreamBridgeError(f"run {writer.run_id!r}: the first write failed")
            return item
        finally:
            self._release_backlog(writer)

    def _release_backlog(self, writer: RunWriter) -> None:
        """Queue the entries that waited for the first write, in call order, in one go."""
        backlog, writer.backlog = writer.backlog or [], None
        for flag, event, payload, ticket in backlog:
            if ticket.done():  # its caller was cancelled
                continue
            if writer.seq is None:
                ticket.set_exception(
                    writer.error
                    or StreamBridgeError(f"run {writer.run_id!r}: the first write failed")
                )
                continue
            try:
                ticket.set_result(self._enqueue(writer, flag, event, payload))
            except StreamBridgeError as exc:
                ticket.set_exception(exc)

    async def settle(self, writer: RunWriter, item: Item) -> None:
        """Wait until ``item`` is stored; raise the reason if it was not."""
        if item.batch is not None and not item.batch.done.done():
            await asyncio.shield(item.batch.done)
        if not item.written:
            writer.raise_error()
            raise StreamBridgeError(f"run {writer.run_id!r}: event {item.seq} was not stored")

    async def backpressure(self, limit: int) -> None:
        if self._open is not None and self._open.size >= limit:
            await asyncio.shield(self._open.done)

    async def drain(self, writer: RunWriter | None = None) -> None:
        """Wait until what was queued (for ``writer``, or at all) has been sent."""
        batch = self._open if writer is None else writer.batch
        if writer is None and batch is None and self._task is not None:
            await asyncio.shield(self._task)
        elif batch is not None and not batch.done.done():
            await asyncio.shield(batch.done)

    async def close(self) -> None:
        """Stop sending; whoever still waits for a queued entry gets BridgeClosedError."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        batch, self._open = self._open, None
        if batch is not None:
            self._fail(batch, BridgeClosedError())
            batch.done.set_result(None)

    def _enqueue(self, writer: RunWriter, flag: str, event: str, payload: bytes) -> Item:
        if writer.terminal_id is not None:
            raise StreamTerminatedError(
                f"run {writer.run_id!r} already ended (terminal id {writer.terminal_id}); "
                "nothing more can be published"
            )
        seq = None if writer.seq is None else writer.seq + 1
        item = Item(seq, flag, event, payload)
        if seq is not None:
            writer.seq = seq
            if flag == "t":
                writer.terminal_id = str(seq)
            else:
                self._account(writer, seq, len(payload))
        if flag == "t":
            writer.ended_at = self._clock()
        batch = self._open
        if batch is None:
            batch = self._open = Batch()
        batch.runs.setdefault(writer.run_id, (writer, []))[1].append(item)
        batch.size += 1
        writer.batch = item.batch = batch
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="runlane-redis-writer")
        return item

    def _account(self, writer: RunWriter, seq: int, size: int) -> None:
        limits = self._limits
        sizes = writer.sizes
        sizes.append((seq, size))
        writer.nbytes += size
        while sizes and (
            len(sizes) > limits.max_events_per_stream or writer.nbytes > limits.max_bytes_per_stream
        ):
            over_bytes = writer.nbytes > limits.max_bytes_per_stream
            writer.nbytes -= sizes.popleft()[1]
            if over_bytes:  # count trimming is MAXLEN ~ in the script; bytes need MINID
                writer.minid = sizes[0][0] if sizes else seq + 1

    async def _loop(self) -> None:
        try:
            while self._open is not None:
                batch, self._open = self._open, None
                try:
                    await self._send(batch)
                except Exception as exc:  # never die with entries queued behind this batch
                    logger.exception("writing a batch to Redis failed")
                    self._fail(batch, StreamBridgeError(repr(exc)))
                finally:
                    batch.done.set_result(None)
        finally:
            self._task = None

    @staticmethod
    def _fail(batch: Batch, error: StreamBridgeError) -> None:
        for writer, _ in batch.runs.values():
            writer.error = writer.error or error

    async def _send(self, batch: Batch) -> None:
        failures = 0
        while True:
            try:
                replies = await self._execute(batch)
                break
            except NoScriptError:  # Redis restarted and forgot the script: load it again
                self._sha = None
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures >= self._retry.attempts:
                    self._fail(batch, RedisUnavailableError(f"writing to Redis failed: {exc!r}"))
                    return
                await asyncio.sleep(self._retry.delay(failures))
        for (writer, items), reply in zip(batch.runs.values(), replies, strict=True):
            self._apply(writer, items, reply)

    async def _execute(self, batch: Batch) -> list[Any]:
        async with asyncio.timeout(self._timeout):
            if self._sha is None:
                self._sha = as_str(await self._client.script_load(APPEND_SCRIPT))
            async with self._client.pipeline(transaction=False) as pipe:
                for writer, items in batch.runs.values():
                    rk = writer.keys
                    args: list[Any] = [
                        -1 if items[0].seq is None else items[0].seq - 1,
                        self._limits.max_events_per_stream,
                        writer.minid,
                        self._active_ttl_ms,
                        self._terminal_ttl_ms,
                        writer.token,
                    ]
                    for item in items:
                        args += (item.flag, item.event, item.payload)
                    pipe.evalsha(self._sha, 3, rk.events, rk.meta, rk.removed, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, NoScriptError):
                raise reply
        return replies

    def _apply(self, writer: RunWriter, items: list[Item], reply: Any) -> None:
        run_id = writer.run_id
        if isinstance(reply, Exception):
            logger.error("append to run %r failed: %r", run_id, reply)
            writer.error = StreamBridgeError(f"run {run_id!r}: append failed: {reply}")
            return
        code, last, n = as_str(reply[0]), int(reply[1]), int(reply[2])
        first = items[0]
        if first.seq is None:  # the first write: Redis chose the id
            writer.seq = last if code == "ok" else max(last, n)
            if code == "ok":
                first.seq = last
                if first.flag == "d":
                    self._account(writer, last, len(first.payload))
        for item in items:
            item.written = item.seq is not None and item.seq <= last
        if code == "ok" and n:
            writer.terminal_id = str(n)
            writer.ended_at = writer.ended_at or self._clock()
        elif code == "ended":
            writer.terminal_id = str(n)
            writer.ended_at = writer.ended_at or self._clock()
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
