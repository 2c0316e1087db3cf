"""Stream bridge benchmark: each backend side by side with a bare baseline, as ratios.

Run ``python bench/bridge.py`` (about a minute per event loop) or
``python bench/bridge.py --quick`` (a few seconds). See ``bench/README.md``.

What is compared (the same process, the same event loop, runs interleaved):

1. ``MemoryStreamBridge`` against a *bare asyncio fan-out*: one shared
   append-only list of ``(id, event, payload, terminal)`` tuples, the payload
   encoded once per event with ``orjson.dumps``; each reader is an async
   generator that walks the list with its own index and, when caught up,
   awaits one shared ``asyncio.Future`` that the next publish resolves (no
   polling, no timers, no retention, no validation, no decoded ``data``).
2. ``RedisStreamBridge`` against a *raw redis-py loop* on the same Redis: the
   producer sends ``XADD <key> MAXLEN ~ n 0-<seq> e <event> d <payload>`` in
   pipelined batches (orjson-encoded once per event); every reader runs its
   own blocking ``XREAD COUNT 100 BLOCK 15000`` from an explicit id on its own
   connection and keeps the raw payload bytes (no JSON decode).
3. Memory per idle subscriber (tracemalloc) for both bridges and the baseline.

Rates are events delivered per second (all subscribers together, and per
subscriber), from the first publish until every subscriber has the terminal
entry. Each figure is the best of ``--repeat`` runs after a warm-up; the
median ratio is printed too. The machine is shared and noisy: read ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import inspect
import logging
import platform
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import redis.asyncio as aioredis

from runlane.runtime.stream_bridge.base import StreamBridge, StreamEvent
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge

REDIS_URL = "redis://127.0.0.1:6379/0"
BIG_BYTES = 1 << 40  # byte retention out of the way: the benchmark must see no gap
XREAD_COUNT = 100  # as the Redis bridge's hub reads
RAW_BATCH = 128  # XADDs per pipeline round trip in the raw baseline

IDLE_TIMEOUT = 60.0  # seconds for N idle readers to attach before giving up

perf = time.perf_counter


class LogCounter(logging.Handler):
    """Collects runlane's warnings so they do not break up the tables; reported per loop."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: dict[str, tuple[int, str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        count, first = self.seen.get(str(record.msg), (0, record.getMessage()))
        self.seen[str(record.msg)] = (count + 1, first)

    def report(self) -> None:
        for count, first in self.seen.values():
            print(f"  runlane logged {count} x: {first}")
        self.seen.clear()


LOG_COUNTER = LogCounter()


# --- workload ----------------------------------------------------------------


def make_events(n: int) -> list[dict[str, Any]]:
    """LangGraph-like ``messages`` chunks, about 230 bytes of JSON each."""
    return [
        {
            "type": "AIMessageChunk",
            "id": f"run-7f3c2a9e-{i // 50}",
            "content": f"token {i} of a streamed answer, long enough to look like one",
            "response_metadata": {"model_name": "bench", "finish_reason": None},
            "tool_call_chunks": [],
            "step": i,
        }
        for i in range(n)
    ]


class Countdown:
    """A future that resolves when ``hit`` was called ``n`` times."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if n == 0:
            self.done.set_result(None)

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)


async def produce(
    publish: Callable[[str, Any], Awaitable[Any]],
    events: list[dict[str, Any]],
    burst: int,
) -> None:
    """Publish every event, yielding to the loop after each ``burst`` of them."""
    for i, data in enumerate(events, 1):
        await publish("messages", data)
        if i % burst == 0:
            await asyncio.sleep(0)


# --- the bare asyncio baseline -------------------------------------------------

Entry = tuple[str, str, bytes, bool]


class BareFanout:
    """The least an in-process fan-out can do: see the module docstring, item 1."""

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self._waiter: asyncio.Future[None] | None = None

    async def publish(self, event: str, data: Any, terminal: bool = False) -> str:
        payload = orjson.dumps(data)
        entry_id = str(len(self.log) + 1)
        self.log.append((entry_id, event, payload, terminal))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)
        return entry_id

    async def read(self, after: int = 0) -> AsyncIterator[Entry]:
        log = self.log
        position = after
        while True:
            if position < len(log):
                entry = log[position]
                position += 1
                yield entry
                if entry[3]:
                    return
                continue
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


# --- one throughput run per implementation ------------------------------------


@dataclass
class Run:
    seconds: float
    delivered: int


async def memory_bridge_run(
    events: list[dict[str, Any]], subs: int, burst: int, retain_all: bool = False
) -> Run:
    # The default retention (256 events) as in production, unless the producer's
    # bursts are so long that readers would fall that far behind (a gap fails the
    # run); ``retain_all`` keeps every event, to show what a long retained log costs.
    retention = len(events) + 16 if retain_all else max(256, 4 * burst)
    bridge = MemoryStreamBridge(
        max_events_per_stream=retention, max_bytes_per_stream=BIG_BYTES
    )
    run_id = "bench"
    await bridge.publish(run_id, "ready", None)  # id 1: proves each reader is attached
    ready = Countdown(subs)

    async def reader() -> int:
        got = 0
        async for item in bridge.subscribe(run_id, last_event_id="0"):
            if not isinstance(item, StreamEvent) or not item.id:
                raise RuntimeError(f"benchmark reader got {item!r}")
            if item.terminal:
                break
            if item.id == "1":
                ready.hit()
            else:
                got += 1
        return got

    tasks = [asyncio.create_task(reader()) for _ in range(subs)]
    await ready.done

    async def publish(event: str, data: Any) -> None:
        await bridge.publish(run_id, event, data)

    t0 = perf()
    await produce(publish, events, burst)
    await bridge.publish_end(run_id)
    counts = await asyncio.gather(*tasks)
    elapsed = perf() - t0
    await bridge.close()
    check(counts, len(events))
    return Run(elapsed, sum(counts))


async def bare_run(events: list[dict[str, Any]], subs: int, burst: int) -> Run:
    fan = BareFanout()
    await fan.publish("ready", None)
    ready = Countdown(subs)

    async def reader() -> int:
        got = 0
        async for entry in fan.read():
            if entry[3]:
                break
            if entry[0] == "1":
                ready.hit()
            else:
                got += 1
        return got

    tasks = [asyncio.create_task(reader()) for _ in range(subs)]
    await ready.done
    t0 = perf()
    await produce(fan.publish, events, burst)
    await fan.publish("end", None, terminal=True)
    counts = await asyncio.gather(*tasks)
    elapsed = perf() - t0
    check(counts, len(events))
    return Run(elapsed, sum(counts))


def check(counts: list[int], expected: int) -> None:
    if any(c != expected for c in counts):
        got = sorted(set(counts))
        raise RuntimeError(f"a reader missed events: expected {expected}, got {got}")


class RedisEnv:
    """A per-run key prefix, and the clean-up of every key under it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"runlane-bench-{uuid.uuid4().hex[:10]}"
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{what}-{self._n}"

    async def delete_keys(self) -> int:
        client = aioredis.Redis.from_url(self.url)
        try:
            found = [k async for k in client.scan_iter(match=f"{self.prefix}*", count=1000)]
            if found:
                await client.delete(*found)
            return len(found)
        finally:
            await client.aclose()


def redis_modes() -> list[tuple[str, dict[str, Any]]]:
    """The Redis bridge's publish modes: durable (the default), and write-behind if offered."""
    from runlane.runtime.stream_bridge.redis import RedisStreamBridge

    modes: list[tuple[str, dict[str, Any]]] = [("redis", {})]
    if "write_behind" in inspect.signature(RedisStreamBridge.__init__).parameters:
        modes.append(("redis w-behind", {"write_behind": True}))
    return modes


async def redis_bridge_run(
    env: RedisEnv,
    events: list[dict[str, Any]],
    subs: int,
    burst: int,
    options: dict[str, Any],
) -> Run:
    from runlane.runtime.stream_bridge.redis import RedisStreamBridge

    bridge = RedisStreamBridge(
        env.url,
        key_prefix=env.prefix,
        max_events_per_stream=len(events) + 16,
        max_bytes_per_stream=BIG_BYTES,
        **options,
    )
    run_id = env.name("bridge")
    try:
        await bridge.publish(run_id, "ready", None)
        await bridge.flush(run_id)
        ready = Countdown(subs)

        async def reader() -> int:
            got = 0
            async for item in bridge.subscribe(run_id, last_event_id="0"):
                if not isinstance(item, StreamEvent):
                    raise RuntimeError(f"benchmark reader got {item!r}")
                if not item.id:
                    continue  # a heartbeat: the run is slow, not broken
                if item.terminal:
                    break
                if item.id == "1":
                    ready.hit()
                else:
                    got += 1
            return got

        tasks = [asyncio.create_task(reader()) for _ in range(subs)]
        await ready.done

        async def publish(event: str, data: Any) -> None:
            await bridge.publish(run_id, event, data)

        t0 = perf()
        await produce(publish, events, burst)
        await bridge.publish_end(run_id)
        counts = await asyncio.gather(*tasks)
        elapsed = perf() - t0
        check(counts, len(events))
        return Run(elapsed, sum(counts))
    finally:
        await bridge.close()


def xread_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-key XREAD reply (RESP2 list or RESP3 dict shape)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (value,) = reply.values()
        return list(value[0] if value and isinstance(value[0], list) else value)
    return list(reply[0][1])


async def raw_redis_run(env: RedisEnv, events: list[dict[str, Any]], subs: int) -> Run:
    key = f"{env.prefix}:raw:{env.name('raw')}"
    maxlen = len(events) + 16
    pool = aioredis.ConnectionPool.from_url(env.url, max_connections=subs + 4)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.xadd(key, {"e": "ready", "d": b"null"}, id="0-1")
        ready = Countdown(subs)

        async def reader() -> int:
            got, cursor = 0, b"0-0"
            while True:
                reply = await client.xread({key: cursor}, count=XREAD_COUNT, block=15_000)
                for entry_id, fields in xread_entries(reply):
                    cursor = entry_id
                    if b"t" in fields:
                        return got
                    if entry_id == b"0-1":
                        ready.hit()
                    else:
                        _payload = fields[b"d"]  # what an SSE writer sends, as is
                        got += 1

        tasks = [asyncio.create_task(reader()) for _ in range(subs)]
        await ready.done
        t0 = perf()
        seq = 1
        for start in range(0, len(events), RAW_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for data in events[start : start + RAW_BATCH]:
                    seq += 1
                    pipe.xadd(
                        key, {"e": "messages", "d": orjson.dumps(data)},
                        id=f"0-{seq}", maxlen=maxlen, approximate=True,
                    )
                await pipe.execute()
        await client.xadd(key, {"e": "end", "d": b"null", "t": "1"}, id=f"0-{seq + 1}")
        counts = await asyncio.gather(*tasks)
        elapsed = perf() - t0
        check(counts, len(events))
        return Run(elapsed, sum(counts))
    finally:
        await client.delete(key)
        await client.aclose()
        await pool.aclose()


# --- latency: one event in flight ---------------------------------------------


@dataclass
class Latency:
    publish_us: list[float] = field(default_factory=list)  # the publish call alone
    deliver_us: list[float] = field(default_factory=list)  # publish start to reader has it

    def summary(self) -> str:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return (
            f"publish p50 {pct(self.publish_us, 0.5):8.1f} p99 {pct(self.publish_us, 0.99):8.1f}"
            f" | delivery p50 {pct(self.deliver_us, 0.5):8.1f}"
            f" p99 {pct(self.deliver_us, 0.99):8.1f}"
        )


class PingPong:
    """The producer waits for the reader to receive each event before the next."""

    def __init__(self) -> None:
        self.arrived: asyncio.Future[float] | None = None

    def expect(self) -> asyncio.Future[float]:
        self.arrived = asyncio.get_running_loop().create_future()
        return self.arrived

    def got(self) -> None:
        if self.arrived is not None and not self.arrived.done():
            self.arrived.set_result(perf())


async def ping_pong(
    publish: Callable[[str, Any], Awaitable[Any]],
    events: list[dict[str, Any]],
    pong: PingPong,
) -> Latency:
    lat = Latency()
    for data in events:
        arrived = pong.expect()
        t0 = perf()
        await publish("messages", data)
        t1 = perf()
        t2 = await arrived
        lat.publish_us.append((t1 - t0) * 1e6)
        lat.deliver_us.append((t2 - t0) * 1e6)
    return lat


async def latency_bridge(bridge: StreamBridge, events: list[dict[str, Any]]) -> Latency:
    run_id = f"latency-{uuid.uuid4().hex[:8]}"
    await bridge.publish(run_id, "ready", None)
    pong = PingPong()
    first = pong.expect()

    async def reader() -> None:
        async for item in bridge.subscribe(run_id, last_event_id="0"):
            if isinstance(item, StreamEvent) and item.id:
                if item.terminal:
                    return
                pong.got()

    task = asyncio.create_task(reader())
    await first

    async def publish(event: str, data: Any) -> None:
        await bridge.publish(run_id, event, data)

    try:
        return await ping_pong(publish, events, pong)
    finally:
        await bridge.publish_end(run_id)
        await task


async def latency_bare(events: list[dict[str, Any]]) -> Latency:
    fan = BareFanout()
    await fan.publish("ready", None)
    pong = PingPong()
    first = pong.expect()

    async def reader() -> None:
        async for entry in fan.read():
            if entry[3]:
                return
            pong.got()

    task = asyncio.create_task(reader())
    await first
    lat = await ping_pong(fan.publish, events, pong)
    await fan.publish("end", None, terminal=True)
    await task
    return lat


async def latency_raw_redis(env: RedisEnv, events: list[dict[str, Any]]) -> Latency:
    key = f"{env.prefix}:raw:{env.name('latency')}"
    pool = aioredis.ConnectionPool.from_url(env.url, max_connections=4)
    client = aioredis.Redis(connection_pool=pool)
    pong = PingPong()
    seq = 1
    await client.xadd(key, {"e": "ready", "d": b"null"}, id="0-1")
    first = pong.expect()

    async def reader() -> None:
        cursor = b"0-0"
        while True:
            reply = await client.xread({key: cursor}, count=XREAD_COUNT, block=15_000)
            for entry_id, fields in xread_entries(reply):
                cursor = entry_id
                if b"t" in fields:
                    return
                pong.got()

    async def publish(event: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        await client.xadd(key, {"e": event, "d": orjson.dumps(data)}, id=f"0-{seq}")

    task = asyncio.create_task(reader())
    try:
        await first
        return await ping_pong(publish, events, pong)
    finally:
        await client.xadd(key, {"e": "end", "d": b"null", "t": "1"}, id=f"0-{seq + 1}")
        await task
        await client.delete(key)
        await client.aclose()
        await pool.aclose()


# --- memory per idle subscriber -----------------------------------------------


async def idle_bytes(
    attach: Callable[[Callable[[], None]], Coroutine[Any, Any, None]], n: int
) -> float:
    """Bytes per reader parked after its first event, by tracemalloc (1 warm reader first)."""
    warm = Countdown(1)
    warm_task = asyncio.create_task(attach(warm.hit))
    await warm.done
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    tasks: list[asyncio.Task[None]] = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ready = Countdown(n)
        tasks = [asyncio.create_task(attach(ready.hit)) for _ in range(n)]
        async with asyncio.timeout(IDLE_TIMEOUT):
            await ready.done
        for _ in range(5):
            await asyncio.sleep(0)  # let every reader reach its wait
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    except TimeoutError:
        raise RuntimeError(
            f"only {n - ready.left} of {n} readers had their first event after {IDLE_TIMEOUT} s"
        ) from None
    finally:
        tracemalloc.stop()
        for task in [*tasks, warm_task]:
            task.cancel()
        await asyncio.gather(*tasks, warm_task, return_exceptions=True)
    return (after - before) / n


async def idle_memory_bridge(bridge: StreamBridge, n: int) -> float:
    run_id = f"idle-{uuid.uuid4().hex[:8]}"
    await bridge.publish(run_id, "ready", None)
    if hasattr(bridge, "flush"):
        await bridge.flush(run_id)

    async def attach(hit: Callable[[], None]) -> None:
        async for item in bridge.subscribe(run_id, last_event_id="0"):
            if isinstance(item, StreamEvent) and item.id == "1":
                hit()

    return await idle_bytes(attach, n)


async def idle_memory_bare(n: int) -> float:
    fan = BareFanout()
    await fan.publish("ready", None)

    async def attach(hit: Callable[[], None]) -> None:
        async for _entry in fan.read():
            hit()

    return await idle_bytes(attach, n)


# --- driver --------------------------------------------------------------------


@dataclass
class Sizes:
    memory: list[tuple[int, int]]  # (subscribers, events)
    memory_retain_all: tuple[int, int]
    redis: list[tuple[int, int]]
    latency_events: int
    redis_latency_events: int
    idle: int


FULL = Sizes(
    memory=[(1, 20_000), (100, 2_000), (1000, 300)],
    memory_retain_all=(1, 20_000),
    redis=[(1, 5_000), (100, 1_000)],
    latency_events=2_000,
    redis_latency_events=500,
    idle=2_000,
)
QUICK = Sizes(
    memory=[(1, 4_000), (100, 400), (1000, 60)],
    memory_retain_all=(1, 4_000),
    redis=[(1, 2_000), (100, 200)],
    latency_events=500,
    redis_latency_events=100,
    idle=300,
)


@dataclass
class Row:
    label: str
    subs: int
    events: int
    base: list[Run]
    impl: list[Run]
    target: float | None

    @staticmethod
    def rate(run: Run) -> float:
        return run.delivered / run.seconds

    def line(self) -> str:
        base = max(self.rate(r) for r in self.base)
        impl = max(self.rate(r) for r in self.impl)
        ratio = impl / base
        median = statistics.median(
            self.rate(i) / self.rate(b) for i, b in zip(self.impl, self.base, strict=True)
        )
        verdict = ""
        if self.target is not None:
            verdict = f"{'ok ' if ratio >= self.target else 'LOW'} (>= {self.target:.0%})"
        return (
            f"{self.label:<15}{self.subs:>5}{self.events:>8}"
            f"{base:>15,.0f}{impl:>15,.0f}{impl / self.subs:>17,.0f}"
            f"{ratio:>8.0%}{median:>8.0%}  {verdict}"
        )


HEADER = (
    f"{'comparison':<15}{'subs':>5}{'events':>8}"
    f"{'baseline ev/s':>15}{'bridge ev/s':>15}{'bridge/sub ev/s':>17}"
    f"{'ratio':>8}{'median':>8}  target"
)


async def measure(
    make_base: Callable[[], Awaitable[Run]],
    make_impl: Callable[[], Awaitable[Run]],
    repeat: int,
) -> tuple[list[Run], list[Run]]:
    """A warm-up of each, then ``repeat`` interleaved pairs (noise hits both alike)."""
    await make_base()
    await make_impl()
    base: list[Run] = []
    impl: list[Run] = []
    for i in range(repeat):
        gc.collect()
        if i % 2:  # alternate the order too
            impl.append(await make_impl())
            base.append(await make_base())
        else:
            base.append(await make_base())
            impl.append(await make_impl())
    return base, impl


async def run_all(args: argparse.Namespace, env: RedisEnv | None) -> None:
    sizes = QUICK if args.quick else FULL
    burst: int = args.burst
    repeat: int = args.repeat

    print("\n[1] memory bridge vs bare asyncio fan-out (delivered events/s)")
    print(HEADER)
    for subs, n in sizes.memory:
        events = make_events(n)
        base, impl = await measure(
            partial(bare_run, events, subs, burst),
            partial(memory_bridge_run, events, subs, burst),
            repeat,
        )
        row = Row("memory", subs, n, base, impl, 0.5 if subs == 1 else None)
        print(row.line(), flush=True)
    subs, n = sizes.memory_retain_all
    events = make_events(n)
    base, impl = await measure(
        partial(bare_run, events, subs, burst),
        partial(memory_bridge_run, events, subs, burst, retain_all=True),
        repeat,
    )
    print(Row("memory ret=all", subs, n, base, impl, None).line(), flush=True)
    print(
        "  (memory: default retention of 256 events; ret=all keeps every event in the log,"
        " as a large max_events_per_stream would)"
    )

    redis_ok = False
    if env is not None:
        print("\n[2] redis bridge vs raw redis-py pipelined XADD / blocking XREAD (events/s)")
        print(HEADER)
        try:
            for label, options in redis_modes():
                for subs, n in sizes.redis:
                    events = make_events(n)
                    base, impl = await measure(
                        partial(raw_redis_run, env, events, subs),
                        partial(redis_bridge_run, env, events, subs, burst, options),
                        repeat,
                    )
                    row = Row(label, subs, n, base, impl, 0.5 if subs == 1 else None)
                    print(row.line(), flush=True)
            redis_ok = True
            print(
                "  (redis: publish waits until its entry is stored; w-behind: write_behind=True,"
                " publish returns once queued.\n   With 100 subscribers the raw baseline runs 100"
                " blocking XREAD connections, the bridge one shared reader: that ratio\n"
                "   shows what the hub saves, not parity.)"
            )
        except Exception as exc:  # the Redis bridge is young: report, do not hide the rest
            print(f"  redis section failed: {exc!r}")

    print("\n[3] latency, one event in flight, 1 subscriber (microseconds)")
    events = make_events(sizes.latency_events)
    await latency_bare(events[:100])
    print(f"  bare asyncio   {(await latency_bare(events)).summary()}")
    bridge = MemoryStreamBridge(max_events_per_stream=len(events) + 16)
    await latency_bridge(bridge, events[:100])
    await bridge.close()
    bridge = MemoryStreamBridge(max_events_per_stream=len(events) + 16)
    print(f"  memory bridge  {(await latency_bridge(bridge, events)).summary()}")
    await bridge.close()
    if env is not None and redis_ok:
        from runlane.runtime.stream_bridge.redis import RedisStreamBridge

        events = make_events(sizes.redis_latency_events)
        print(f"  raw redis      {(await latency_raw_redis(env, events)).summary()}")
        for label, options in redis_modes():
            rbridge = RedisStreamBridge(env.url, key_prefix=env.prefix, **options)
            try:
                lat = await latency_bridge(rbridge, events)
                print(f"  {label:<15}{lat.summary()}")
            finally:
                await rbridge.close()

    print(f"\n[4] memory per idle subscriber (tracemalloc, {sizes.idle} readers, bytes each)")
    print(f"  bare asyncio   {await idle_memory_bare(sizes.idle):>10,.0f}")
    bridge = MemoryStreamBridge()
    print(f"  memory bridge  {await idle_memory_bridge(bridge, sizes.idle):>10,.0f}")
    await bridge.close()
    if env is not None and redis_ok:
        from runlane.runtime.stream_bridge.redis import RedisStreamBridge

        rbridge = RedisStreamBridge(env.url, key_prefix=env.prefix)
        try:
            print(f"  redis bridge   {await idle_memory_bridge(rbridge, sizes.idle):>10,.0f}")
        except Exception as exc:
            print(f"  redis bridge   failed: {exc}")
        finally:
            await rbridge.close()


async def main_async(args: argparse.Namespace) -> None:
    env = RedisEnv(args.redis_url) if not args.no_redis else None
    try:
        await run_all(args, env)
    finally:
        if env is not None:
            deleted = await env.delete_keys()
            print(f"\n  deleted {deleted} leftover Redis keys under {env.prefix}*")
        LOG_COUNTER.report()


def loop_factories(choice: str) -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    factories: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = []
    if choice in ("asyncio", "both"):
        factories.append(("asyncio (default loop)", asyncio.new_event_loop))
    if choice in ("uvloop", "both"):
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed: running the default loop only")
        else:
            version = importlib.metadata.version("uvloop")
            factories.append((f"uvloop {version}", uvloop.new_event_loop))
    return factories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per figure")
    parser.add_argument(
        "--burst", type=int, default=1,
        help="producer yields to the loop after this many publishes (1: after each)",
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    runlane_logger = logging.getLogger("runlane")
    runlane_logger.addHandler(LOG_COUNTER)
    runlane_logger.propagate = False

    print(
        f"runlane stream bridge benchmark: python {platform.python_version()}, "
        f"{platform.machine()}, orjson {orjson.__version__}, "
        f"{'quick' if args.quick else 'full'} sizes, best of {args.repeat} after a warm-up, "
        f"producer yields every {args.burst} publish(es)."
    )
    print(
        "Baselines: memory = shared list + one shared asyncio.Future woken per publish, "
        "orjson.dumps once per event, async-generator readers; redis = pipelined XADD "
        f"batches of {RAW_BATCH} with explicit ids + one blocking XREAD (COUNT {XREAD_COUNT}) "
        "connection per reader, payload kept as bytes."
    )
    print("Shared, noisy machine: compare the ratios, not the absolute rates.")
    for name, factory in loop_factories(args.loop):
        print(f"\n===== event loop: {name} =====")
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main_async(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
