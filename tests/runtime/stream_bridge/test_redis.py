"""Redis-specific behaviour of RedisStreamBridge (the shared rules are in test_contract.py).

Races are scheduled, never slept through: the shared reader's ``XREAD`` and
the bridge's pipelines are wrapped so a test can act at an exact point.
Each test is bounded by ``anyio.fail_after`` so a hang fails.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from runlane.runtime.stream_bridge import (
    HEARTBEAT_SENTINEL,
    StreamEvent,
    StreamGap,
)
from runlane.runtime.stream_bridge.exceptions import RedisUnavailableError, StaleWriterError
from runlane.runtime.stream_bridge.keys import run_keys
from runlane.runtime.stream_bridge.redis import RedisStreamBridge, RetryPolicy

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

LIMIT = 20  # seconds any test may take; only a hang gets near it
FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.05)


def new_run() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def opened(**kwargs: Any) -> AsyncIterator[RedisStreamBridge]:
    bridge = RedisStreamBridge(**kwargs)
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.close()


def bridge_on(client: aioredis.Redis, prefix: str) -> Any:
    """A bridge on ``client``, which the test can wrap."""
    return opened(client=client, key_prefix=prefix)


@asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def next_item(sub: AsyncIterator[Any]) -> Any:
    """The next entry or gap, skipping heartbeats."""
    while True:
        item = await anext(sub)
        if item is not HEARTBEAT_SENTINEL:
            return item


async def take(sub: AsyncIterator[Any], n: int) -> list[Any]:
    return [await next_item(sub) for _ in range(n)]


def event_ids(items: list[Any]) -> list[int]:
    return [int(item.id) for item in items if isinstance(item, StreamEvent)]


class GatedXread:
    """Wraps ``client.xread`` (only the shared reader calls it) to pause it on demand."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.real = client.xread
        self.calls = 0
        self.hold_next = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        client.xread = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.hold_next:
            # Act like a BLOCK that timed out empty, and stop in the window before the
            # next read until the test has written what it wants.
            self.hold_next = False
            self.held.set()
            await self.release.wait()
            return []
        return await self.real(*args, **kwargs)


# --- races --------------------------------------------------------------------


async def test_hub_delivers_an_event_published_between_two_blocking_reads(
    redis_url: str, redis_prefix: str
) -> None:
    """The seed PR's race, for the shared reader: a cursor taken per read ("$") loses
    an entry written between an empty read and the next; explicit cursors do not."""
    async with raw_client(redis_url) as client, bridge_on(client, redis_prefix) as bridge:
        gate = GatedXread(client)
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        # A heartbeat far beyond the test's limit: only the hub can deliver in time.
        sub = bridge.subscribe(run, last_event_id="0", heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            assert event_ids([await next_item(sub)]) == [1]
            gate.hold_next = True
            wanted = asyncio.ensure_future(next_item(sub))
            await gate.held.wait()
            await bridge.publish(run, "values", {"n": 2})  # stored while the hub is between reads
            gate.release.set()
            item = await wanted
        assert isinstance(item, StreamEvent)
        assert (item.id, item.data) == ("2", {"n": 2})
        await sub.aclose()


async def test_event_written_between_catch_up_and_joining_the_hub_is_delivered(
    redis_url: str, redis_prefix: str
) -> None:
    """A subscriber reads history with XRANGE, then joins the hub at its own cursor:
    an entry written in between is not lost."""
    async with raw_client(redis_url) as client, bridge_on(client, redis_prefix) as bridge, opened(
        redis_url=redis_url, key_prefix=redis_prefix
    ) as other:
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        real_pipeline = client.pipeline
        injected = asyncio.Event()

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute
            transactional = kwargs.get("transaction", args[0] if args else True)

            async def execute(*a: Any, **k: Any) -> Any:
                result = await real_execute(*a, **k)
                if transactional and not injected.is_set():  # the catch-up read
                    injected.set()
                    await other.publish(run, "values", {"n": 2})
                return result

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline  # type: ignore[method-assign]
        sub = bridge.subscribe(run, last_event_id="0", heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            items = await take(sub, 2)
        assert injected.is_set()
        assert event_ids(items) == [1, 2]
        await sub.aclose()


async def test_slow_subscriber_overflows_its_buffer_and_catches_up_from_redis(
    redis_url: str, redis_prefix: str
) -> None:
    """A subscriber that stops reading loses its buffered copy, never an event."""
    async with opened(redis_url=redis_url, key_prefix=redis_prefix, subscriber_buffer=4) as bridge:
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        sub = bridge.subscribe(run, heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            assert event_ids([await next_item(sub)]) == [1]
            await asyncio.gather(*(bridge.publish(run, "values", {"n": n}) for n in range(2, 301)))
            await bridge.publish_end(run)
            items = [item async for item in sub if item is not HEARTBEAT_SENTINEL]
        assert event_ids(items) == list(range(2, 302))
        assert not any(isinstance(item, StreamGap) for item in items)
        assert items[-1].terminal


# --- connections --------------------------------------------------------------


async def _connections(url: str, name: str) -> int:
    async with raw_client(url) as admin:
        clients = await admin.client_list()
    return sum(1 for c in clients if c.get("name") == name)


@pytest.mark.parametrize("max_connections", [2, 8])
async def test_redis_connections_do_not_grow_with_subscribers(
    redis_url: str, redis_prefix: str, max_connections: int
) -> None:
    """One shared reader per process: 200 subscribers use no more connections than one."""

    async def attach(bridge: RedisStreamBridge, runs: list[str]) -> list[Any]:
        subs = [bridge.subscribe(run, heartbeat_interval=3600) for run in runs]
        firsts = await asyncio.gather(*(next_item(sub) for sub in subs))
        assert event_ids(firsts) == [1] * len(runs)
        return subs

    async with opened(
        redis_url=redis_url, key_prefix=redis_prefix, max_connections=max_connections
    ) as bridge:
        runs = [new_run() for _ in range(50)]
        await asyncio.gather(*(bridge.publish(run, "values", {"n": 1}) for run in runs))
        with anyio.fail_after(LIMIT):
            one = await attach(bridge, runs[:1])
            with_one = await _connections(redis_url, bridge.client_name)
            many = await attach(bridge, runs * 4)
            assert bridge.get_stats()["total_subscribers"] == 201
            with_many = await _connections(redis_url, bridge.client_name)
            # Every subscriber is live: the hub delivers the next event to all of them.
            await asyncio.gather(*(bridge.publish(run, "values", {"n": 2}) for run in runs))
            seconds = await asyncio.gather(*(next_item(sub) for sub in one + many))
        assert event_ids(seconds) == [2] * 201
        assert 1 <= with_one <= max_connections
        assert with_many <= max_connections
        if max_connections == 2:
            assert with_many == with_one
        for sub in one + many:
            await sub.aclose()


# --- gaps -----------------------------------------------------------------------


async def test_deleted_key_mid_run_gives_a_gap_then_the_stream_continues(
    redis_url: str, redis_prefix: str
) -> None:
    """The writer keeps numbering after its key is lost, so subscribers see the hole."""
    async with raw_client(redis_url) as client, bridge_on(client, redis_prefix) as bridge:
        gate = GatedXread(client)
        run = new_run()
        events_key = run_keys(redis_prefix, run).events
        for n in range(1, 4):
            await bridge.publish(run, "values", {"n": n})
        live = bridge.subscribe(run, heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            assert event_ids(await take(live, 3)) == [1, 2, 3]
            gate.hold_next = True
            wanted = asyncio.ensure_future(next_item(live))
            await gate.held.wait()
            await bridge.publish(run, "values", {"n": 4})
            await bridge.publish(run, "values", {"n": 5})
            assert await client.delete(events_key) == 1
            assert await bridge.publish(run, "values", {"n": 6}) == "6"
            gate.release.set()
            gap = await wanted
            assert gap == StreamGap(run, "3", "6", "6")
            assert event_ids([await next_item(live)]) == [6]
            await bridge.publish(run, "values", {"n": 7})
            assert event_ids([await next_item(live)]) == [7]

            resumed = bridge.subscribe(run, last_event_id="2", heartbeat_interval=3600)
            assert await next_item(resumed) == StreamGap(run, "2", "6", "7")
            assert event_ids(await take(resumed, 2)) == [6, 7]

            # The terminal entry survives its stream key: its copy lives in the meta hash.
            end_id = await bridge.publish_end(run)
            await client.delete(events_key)
            late = bridge.subscribe(run, last_event_id="7", heartbeat_interval=3600)
            last = await next_item(late)
        assert (last.id, last.terminal) == (end_id, True)
        for sub in (live, resumed, late):
            await sub.aclose()


async def test_trimming_below_a_cursor_gives_a_gap(redis_url: str, redis_prefix: str) -> None:
    async with raw_client(redis_url) as client, bridge_on(client, redis_prefix) as bridge:
        run = new_run()
        for n in range(1, 11):
            await bridge.publish(run, "values", {"n": n})
        await client.xtrim(run_keys(redis_prefix, run).events, minid="0-8", approximate=False)
        with anyio.fail_after(LIMIT):
            resumed = bridge.subscribe(run, last_event_id="3", heartbeat_interval=3600)
            assert await next_item(resumed) == StreamGap(run, "3", "8", "10")
            assert event_ids(await take(resumed, 3)) == [8, 9, 10]
            fresh = bridge.subscribe(run, heartbeat_interval=3600)
            assert await next_item(fresh) == StreamGap(run, None, "8", "10")
            assert event_ids(await take(fresh, 3)) == [8, 9, 10]
            # A cursor inside the retained range resumes without a gap.
            inside = bridge.subscribe(run, last_event_id="8", heartbeat_interval=3600)
            assert event_ids(await take(inside, 2)) == [9, 10]
        for sub in (resumed, fresh, inside):
            await sub.aclose()


async def test_byte_limit_trims_what_this_process_wrote(redis_url: str, redis_prefix: str) -> None:
    """Best effort, exact over this writer's entries: old entries go, readers get a gap."""
    async with opened(
        redis_url=redis_url, key_prefix=redis_prefix, max_bytes_per_stream=1000
    ) as bridge:
        run = new_run()
        for n in range(1, 11):
            await bridge.publish(run, "values", {"blob": "x" * 290, "n": n})  # ~310 bytes each
        sub = bridge.subscribe(run, last_event_id="0", heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            gap = await next_item(sub)
            assert gap == StreamGap(run, "0", "8", "10")
            assert event_ids(await take(sub, 3)) == [8, 9, 10]
        await sub.aclose()


# --- Redis restarts -------------------------------------------------------------


class PrivateRedis:
    """A throwaway redis-server without persistence, on its own free port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                subprocess.run(["sleep", "0.01"], check=True)  # polling for a process, not a race
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restart_mid_run_gives_a_gap_then_continues(
    private_redis: PrivateRedis,
) -> None:
    patient = RetryPolicy(attempts=200, base=0.01, cap=0.05)
    async with opened(redis_url=private_redis.url, key_prefix="restart", retry=patient) as bridge:
        run = new_run()
        for n in range(1, 4):
            await bridge.publish(run, "values", {"n": n})
        live = bridge.subscribe(run, heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            assert event_ids(await take(live, 3)) == [1, 2, 3]
            waiting = asyncio.ensure_future(next_item(live))
            private_redis.stop()  # entries 1..3 are gone with it
            private_redis.start()
            assert await bridge.publish(run, "values", {"n": 4}) == "4"
            assert event_ids([await waiting]) == [4]  # the live reader had 1..3: no hole for it
            resumed = bridge.subscribe(run, last_event_id="1", heartbeat_interval=3600)
            assert await next_item(resumed) == StreamGap(run, "1", "4", "4")
            assert event_ids([await next_item(resumed)]) == [4]
            await bridge.publish(run, "values", {"n": 5})
            assert event_ids([await next_item(live)]) == [5]
            assert event_ids([await next_item(resumed)]) == [5]
        await live.aclose()
        await resumed.aclose()


async def test_redis_gone_for_good_ends_subscribers_and_writers_with_a_clear_error(
    private_redis: PrivateRedis,
) -> None:
    async with opened(redis_url=private_redis.url, key_prefix="down", retry=FAST_RETRY) as bridge:
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        live = bridge.subscribe(run, heartbeat_interval=3600)
        with anyio.fail_after(LIMIT):
            assert event_ids([await next_item(live)]) == [1]
            waiting = asyncio.ensure_future(next_item(live))
            private_redis.stop()
            with pytest.raises(RedisUnavailableError):
                await waiting
            with pytest.raises(RedisUnavailableError):
                await bridge.publish(run, "values", {"n": 2})
        await live.aclose()


# --- writers --------------------------------------------------------------------


async def test_retried_publish_after_a_timeout_leaves_no_duplicate(
    redis_url: str, redis_prefix: str
) -> None:
    """The reply to a stored batch is lost (a timeout); the retry re-sends the same
    explicit ids, which the script recognises as already stored."""
    async with raw_client(redis_url) as client, opened(
        client=client, key_prefix=redis_prefix, retry=FAST_RETRY
    ) as bridge:
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        real_pipeline = client.pipeline
        timeouts = 0

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                nonlocal timeouts
                result = await real_execute(*a, **k)
                if not kwargs.get("transaction", True) and timeouts == 0:
                    timeouts += 1
                    raise RedisTimeoutError("reply lost after the write")
                return result

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline  # type: ignore[method-assign]
        with anyio.fail_after(LIMIT):
            ids = await asyncio.gather(
                *(bridge.publish(run, "values", {"n": n}) for n in range(2, 6))
            )
            assert ids == ["2", "3", "4", "5"]
            assert timeouts == 1
            client.pipeline = real_pipeline  # type: ignore[method-assign]
            await bridge.publish_end(run)
            stored = await client.xrange(run_keys(redis_prefix, run).events)
            sub = bridge.subscribe(run, heartbeat_interval=3600)
            items = [item async for item in sub if item is not HEARTBEAT_SENTINEL]
        assert [entry_id for entry_id, _ in stored] == [f"0-{n}".encode() for n in range(1, 7)]
        assert event_ids(items) == [1, 2, 3, 4, 5, 6]


async def test_stale_writer_is_refused_and_keeps_being_refused(
    redis_url: str, redis_prefix: str
) -> None:
    async with opened(redis_url=redis_url, key_prefix=redis_prefix) as first, opened(
        redis_url=redis_url, key_prefix=redis_prefix
    ) as second:
        run = new_run()
        for n in range(1, 4):
            await first.publish(run, "values", {"writer": "first", "n": n})
        assert await second.publish(run, "values", {"writer": "second"}) == "4"
        with anyio.fail_after(LIMIT):
            with pytest.raises(StaleWriterError):
                await first.publish(run, "values", {"writer": "first", "n": 4})
            with pytest.raises(StaleWriterError):
                await first.publish(run, "values", {"writer": "first", "n": 5})
            with pytest.raises(StaleWriterError):
                await first.publish_end(run)
            assert await second.publish_end(run) == "5"
            sub = first.subscribe(run, heartbeat_interval=3600)
            items = [item async for item in sub if item is not HEARTBEAT_SENTINEL]
        assert event_ids(items) == [1, 2, 3, 4, 5]
        assert items[3].data == {"writer": "second"}


async def test_write_behind_reports_a_stale_write_on_the_next_call(
    redis_url: str, redis_prefix: str
) -> None:
    async with opened(
        redis_url=redis_url, key_prefix=redis_prefix, write_behind=True
    ) as first, opened(redis_url=redis_url, key_prefix=redis_prefix) as second:
        run = new_run()
        assert await first.publish(run, "values", {"n": 1}) == "1"  # the first write is durable
        await first.flush(run)
        assert await second.publish(run, "values", {"writer": "second"}) == "2"
        assert await first.publish(run, "values", {"n": 2}) == "2"  # queued, not yet refused
        with anyio.fail_after(LIMIT), pytest.raises(StaleWriterError):
            await first.flush(run)


async def test_terminal_key_ttl_is_short_and_active_ttl_is_long(
    redis_url: str, redis_prefix: str
) -> None:
    async with raw_client(redis_url) as client, opened(
        client=client, key_prefix=redis_prefix, terminal_retention_ttl=30
    ) as bridge:
        run = new_run()
        keys = run_keys(redis_prefix, run)
        await bridge.publish(run, "values", {"n": 1})
        assert await client.ttl(keys.events) > 24 * 3600
        assert await client.ttl(keys.meta) > 24 * 3600
        await bridge.publish_end(run)
        assert 0 < await client.ttl(keys.events) <= 30
        assert 0 < await client.ttl(keys.meta) <= 30


async def test_concurrent_publishes_share_round_trips_and_keep_call_order(
    redis_url: str, redis_prefix: str
) -> None:
    async with raw_client(redis_url) as client, bridge_on(client, redis_prefix) as bridge:
        run = new_run()
        real_pipeline = client.pipeline
        sent = 0

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            nonlocal sent
            if not kwargs.get("transaction", True):
                sent += 1
            return real_pipeline(*args, **kwargs)

        client.pipeline = pipeline  # type: ignore[method-assign]
        with anyio.fail_after(LIMIT):
            ids = await asyncio.gather(
                *(bridge.publish(run, "values", {"n": n}) for n in range(1, 201))
            )
            client.pipeline = real_pipeline  # type: ignore[method-assign]
            sub = bridge.subscribe(run, heartbeat_interval=3600)
            items = await take(sub, 200)
        assert ids == [str(n) for n in range(1, 201)]
        assert [item.data["n"] for item in items] == list(range(1, 201))
        assert sent <= 3  # the first write alone (it learns the tail), then one batch
        await sub.aclose()


async def test_resume_in_another_process_and_removal_seen_from_another_process(
    redis_url: str, redis_prefix: str
) -> None:
    async with opened(redis_url=redis_url, key_prefix=redis_prefix) as writer, opened(
        redis_url=redis_url, key_prefix=redis_prefix
    ) as reader:
        run = new_run()
        for n in range(1, 6):
            await writer.publish(run, "values", {"n": n})
        sub = reader.subscribe(run, last_event_id="3", heartbeat_interval=0.05)
        with anyio.fail_after(LIMIT):
            assert event_ids(await take(sub, 2)) == [4, 5]
            await writer.publish(run, "values", {"n": 6})
            assert event_ids([await next_item(sub)]) == [6]
            await writer.cleanup(run)  # another process removes it: the tombstone tells
            assert await reader.stream_exists(run) is False
            rest = [item async for item in sub if item is not HEARTBEAT_SENTINEL]
        assert [item.event for item in rest] == ["__end__"]


async def test_a_blocking_read_longer_than_redis_pys_socket_timeout_does_not_fail(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # redis-py's connections time out reads after 5 s by default; the hub's
    # XREAD blocks for a whole heartbeat interval. A quiet stream with a 6 s
    # heartbeat must give a heartbeat, not a failed read and a backoff.
    async with opened(redis_url=redis_url, key_prefix=redis_prefix) as bridge:
        run = new_run()
        await bridge.publish(run, "values", {"n": 1})
        sub = bridge.subscribe(run, heartbeat_interval=6)
        with anyio.fail_after(LIMIT):
            assert event_ids([await next_item(sub)]) == [1]
            assert await anext(sub) is HEARTBEAT_SENTINEL
            await bridge.publish(run, "values", {"n": 2})
            assert event_ids([await next_item(sub)]) == [2]
        await sub.aclose()
    assert "stream hub read failed" not in caplog.text
