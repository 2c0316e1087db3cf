"""The stream bridge contract, run against every backend.

Written from DESIGN.md ("Stream bridge", "Precise semantics") and issue 4
("Contract (both backends)", "Tests that prove it"), not from either
implementation. Each test names the rule it checks in its docstring.

Conventions:

- Every test is bounded by a hard ``anyio.fail_after`` (``@bounded``), so a
  hang fails instead of blocking the run. No test asserts a duration.
- Subscribers use a 0.05 s heartbeat so "waiting" is cheap. Races are made
  deterministic by ordering (a heartbeat proves the subscriber is between two
  reads), never by sleeping; ``sleep(0)`` only yields to the scheduler.
- Housekeeping is driven with the injected :class:`FakeClock` and ``sweep()``.
  Only what the Redis backend delegates to Redis key TTLs (terminal stream
  expiry) is tested memory-only, plus one Redis test with a 1 s real TTL.
- Tests marked ``memory_only`` check behaviour DESIGN.md makes best-effort or
  TTL-driven for Redis; ``redis_only`` tests check the Redis-specific lines.
"""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from runlane.runtime.stream_bridge import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    HEARTBEAT_SENTINEL,
    TERMINAL_STATES,
    StreamBridge,
    StreamEvent,
    StreamGap,
    StreamStatus,
)
from runlane.runtime.stream_bridge.exceptions import (
    BridgeClosedError,
    StaleWriterError,
    StreamCapacityExceededError,
    StreamTerminatedError,
)

from .conftest import BridgeFactory, FakeClock

pytestmark = pytest.mark.anyio

HB = 0.05  # heartbeat interval for every subscriber in this suite
TERMINAL_NAMES = {"end", "cancel", "error", "dead_letter"}
KIND_NAMES = {
    StreamStatus.ENDED: "end",
    StreamStatus.CANCELLED: "cancel",
    StreamStatus.ERRORED: "error",
}
SEED_STATS_KEYS = {
    "total_streams",
    "active_streams",
    "terminal_streams",
    "total_events",
    "total_bytes",
    "total_subscribers",
    "closed",
}
# Housekeeping tests keep the background loop out of the way and call sweep().
QUIET = {"cleanup_interval": 3600.0}

memory_only = pytest.mark.parametrize("backend", [pytest.param("memory", id="memory")])
redis_only = pytest.mark.parametrize(
    "backend", [pytest.param("redis", id="redis", marks=pytest.mark.redis)]
)


# --- helpers ----------------------------------------------------------------


def bounded(seconds: float = 20.0) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """Fail the decorated async test if it runs longer than ``seconds``."""

    def decorate(fn: Callable[..., Awaitable[None]]) -> Any:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> None:
            with anyio.fail_after(seconds):
                await fn(*args, **kwargs)

        return wrapper

    return decorate


def new_run() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def data_for(i: int) -> dict[str, Any]:
    return {"i": i}


@asynccontextmanager
async def subscription(
    bridge: StreamBridge, run_id: str, cursor: str | None = None, *, hb: float = HB
) -> AsyncIterator[Any]:
    """Open a subscription and always close it (it stays attached until then)."""
    sub: Any = bridge.subscribe(run_id, last_event_id=cursor, heartbeat_interval=hb)
    if inspect.isawaitable(sub):  # tolerated here; the seed's shape is checked separately
        sub = await sub
    try:
        yield sub
    finally:
        aclose = getattr(sub, "aclose", None)
        if aclose is not None:
            with anyio.fail_after(10):
                await aclose()


async def nxt(sub: Any) -> Any:
    """The next item that is not a heartbeat."""
    while True:
        item = await sub.__anext__()
        if item is not HEARTBEAT_SENTINEL:
            return item


async def drain(sub: Any, *, strict: bool = True) -> list[Any]:
    """Every non-heartbeat item until the subscription stops by itself.

    ``strict``: also check that nothing (no sentinel either) follows a terminal
    entry; off for streams with data events named like terminal entries.
    """
    items: list[Any] = []
    async for item in sub:
        if strict and items and is_terminal(items[-1]):
            raise AssertionError(f"{item!r} was sent after the terminal entry {items[-1]!r}")
        if item is not HEARTBEAT_SENTINEL:
            items.append(item)
    return items


async def take(sub: Any, count: int) -> list[Any]:
    """Up to ``count`` non-heartbeat items; fewer only if the subscription stops."""
    items: list[Any] = []
    while len(items) < count:
        try:
            items.append(await nxt(sub))
        except StopAsyncIteration:
            break
    return items


async def take_until_id(sub: Any, target: str) -> list[Any]:
    """Non-heartbeat items up to and including the event with id ``target``."""
    items: list[Any] = []
    while True:
        item = await nxt(sub)
        items.append(item)
        if isinstance(item, StreamEvent) and item.id and int(item.id) >= int(target):
            return items


async def read_first(bridge: StreamBridge, run_id: str, count: int) -> list[Any]:
    """The first ``count`` items of a run through a fresh subscription."""
    async with subscription(bridge, run_id) as sub:
        return await take(sub, count)


async def read_all(
    bridge: StreamBridge, run_id: str, cursor: str | None = None, *, strict: bool = True
) -> list[Any]:
    """A whole (terminal) stream through a fresh subscription."""
    async with subscription(bridge, run_id, cursor) as sub:
        return await drain(sub, strict=strict)


def ids(items: list[Any]) -> list[int]:
    return [int(item.id) for item in items if isinstance(item, StreamEvent) and item.id]


def gaps(items: list[Any]) -> list[StreamGap]:
    return [item for item in items if isinstance(item, StreamGap)]


def is_terminal(item: Any) -> bool:
    return isinstance(item, StreamEvent) and bool(item.id) and item.event in TERMINAL_NAMES


async def fill(bridge: StreamBridge, run_id: str, count: int, *, first: int = 1) -> list[str]:
    return [
        await bridge.publish(run_id, "values", data_for(i)) for i in range(first, first + count)
    ]


def check_no_silent_skip(items: list[Any], *, run_id: str, cursor: str | None) -> None:
    """Each event is the next id, or the oldest retained id right after a gap."""
    last = int(cursor) if cursor else 0
    requested = cursor
    pending: StreamGap | None = None
    for item in items:
        if isinstance(item, StreamGap):
            assert pending is None, "two gaps with no event between them"
            assert item.run_id == run_id
            assert item.requested_event_id == requested
            pending = item
            continue
        assert isinstance(item, StreamEvent)
        assert item.id, f"unexpected sentinel {item!r}"
        n = int(item.id)
        if pending is not None:
            assert item.id == pending.earliest_available_event_id
            assert n > last + 1, "a gap was reported although nothing was skipped"
            assert pending.latest_available_event_id is not None
            assert int(pending.latest_available_event_id) >= n
            pending = None
        else:
            assert n == last + 1, f"silent skip or duplicate: {last} -> {n}"
        last = n
        requested = item.id
    assert pending is None, "a gap not followed by an event"


class Consumer:
    """Reads a subscription in a task; ``waiting`` is set at each heartbeat."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.items: list[Any] = []
        self.heartbeats = 0
        self.waiting = anyio.Event()

    async def run(self) -> None:
        async for item in self.sub:
            if item is HEARTBEAT_SENTINEL:
                self.heartbeats += 1
                self.waiting.set()
            else:
                self.items.append(item)


# --- public names -----------------------------------------------------------


def test_sentinels_are_distinct_events_with_empty_ids() -> None:
    """Sentinels HEARTBEAT/END/CANCELLED are events with id="" and distinct objects."""
    sentinels = [HEARTBEAT_SENTINEL, END_SENTINEL, CANCELLED_SENTINEL]
    for sentinel in sentinels:
        assert isinstance(sentinel, StreamEvent)
        assert sentinel.id == ""
    assert len({id(s) for s in sentinels}) == 3
    assert HEARTBEAT_SENTINEL != END_SENTINEL
    assert END_SENTINEL != CANCELLED_SENTINEL
    assert CANCELLED_SENTINEL != HEARTBEAT_SENTINEL


def test_status_names_and_terminal_states() -> None:
    """StreamStatus has ACTIVE, ENDED, CANCELLED, ERRORED, CLOSED; the kinds are terminal."""
    for name in ("ACTIVE", "ENDED", "CANCELLED", "ERRORED", "CLOSED"):
        assert hasattr(StreamStatus, name)
    assert {StreamStatus.ENDED, StreamStatus.CANCELLED, StreamStatus.ERRORED} <= set(
        TERMINAL_STATES
    )
    assert StreamStatus.ACTIVE not in TERMINAL_STATES


def test_stream_event_is_frozen() -> None:
    """StreamEvent(id, event, data) is frozen."""
    event = StreamEvent(id="1", event="values", data={"a": 1})
    assert (event.id, event.event, event.data) == ("1", "values", {"a": 1})
    with pytest.raises((AttributeError, TypeError)):
        event.id = "2"  # type: ignore[misc]


def test_stream_gap_fields() -> None:
    """StreamGap(run_id, requested_event_id, earliest_available_event_id, latest_...)."""
    gap = StreamGap(
        run_id="r",
        requested_event_id=None,
        earliest_available_event_id="3",
        latest_available_event_id="9",
    )
    assert (gap.run_id, gap.requested_event_id) == ("r", None)
    assert (gap.earliest_available_event_id, gap.latest_available_event_id) == ("3", "9")


def test_exceptions_exist() -> None:
    """.exceptions has BridgeClosedError, StreamCapacityExceededError,
    StreamTerminatedError, StaleWriterError."""
    for exc in (
        BridgeClosedError,
        StreamCapacityExceededError,
        StreamTerminatedError,
        StaleWriterError,
    ):
        assert issubclass(exc, Exception)


@bounded()
async def test_bridge_is_a_stream_bridge(bridge: Any) -> None:
    """Both backends implement the abstract StreamBridge."""
    assert isinstance(bridge, StreamBridge)


@bounded()
async def test_subscribe_returns_an_async_iterator_directly(bridge: Any) -> None:
    """API as in the seed: ``async for item in bridge.subscribe(...)``."""
    run = new_run()
    await bridge.publish(run, "values", data_for(1))
    sub = bridge.subscribe(run, heartbeat_interval=HB)
    try:
        assert not inspect.isawaitable(sub)
        assert hasattr(sub, "__anext__")
        first = await nxt(sub)
        assert first.id == "1"
    finally:
        await sub.aclose()


# --- ids --------------------------------------------------------------------


@bounded()
async def test_ids_are_dense_from_one_and_terminal_takes_the_next_id(bridge: Any) -> None:
    """Event ids are "1", "2", ... dense; the terminal event has an id too."""
    run = new_run()
    published = await fill(bridge, run, 12)
    assert published == [str(i) for i in range(1, 13)]
    assert await bridge.publish_end(run) == "13"
    items = await read_all(bridge, run)
    assert [item.id for item in items] == [str(i) for i in range(1, 14)]
    assert [item.event for item in items] == ["values"] * 12 + ["end"]
    assert [item.data for item in items[:-1]] == [data_for(i) for i in range(1, 13)]


@bounded()
async def test_ids_are_per_run(bridge: Any) -> None:
    """Ids are the run-local sequence number."""
    first, second = new_run(), new_run()
    assert await bridge.publish(first, "values", 1) == "1"
    assert await bridge.publish(first, "values", 2) == "2"
    assert await bridge.publish(second, "values", 1) == "1"
    assert await bridge.publish(first, "values", 3) == "3"
    assert await bridge.publish_end(second) == "2"


@bounded()
async def test_ids_compare_as_integers_not_strings(bridge: Any) -> None:
    """Compare ids as integers: resuming after "9" gives "10", after "99" gives "100"."""
    run = new_run()
    await fill(bridge, run, 120)
    await bridge.publish_end(run)
    assert ids(await read_all(bridge, run, "9")) == list(range(10, 122))
    assert ids(await read_all(bridge, run, "99")) == list(range(100, 122))


@bounded()
async def test_concurrent_publishes_get_dense_unique_ids(bridge: Any) -> None:
    """Ids are dense and strictly increasing even when publishes overlap."""
    run = new_run()
    returned: dict[int, str] = {}

    async def publish(i: int) -> None:
        returned[i] = await bridge.publish(run, "values", data_for(i))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(publish, i)
    assert sorted(int(v) for v in returned.values()) == list(range(1, 51))
    assert await bridge.publish_end(run) == "51"
    items = await read_all(bridge, run)
    assert ids(items) == list(range(1, 52))
    by_id = {item.id: item.data for item in items[:-1]}
    assert all(by_id[returned[i]] == data_for(i) for i in range(50))


# --- cursors ----------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 5, 9, 10, 11])
@bounded()
async def test_resume_is_strictly_after_the_cursor(bridge: Any, k: int) -> None:
    """Resume is strictly after the cursor: no duplicate, no loss."""
    run = new_run()
    await fill(bridge, run, 10)
    await bridge.publish_end(run)  # id 11
    items = await read_all(bridge, run, str(k))
    assert ids(items) == list(range(k + 1, 12))
    assert not gaps(items)


@pytest.mark.parametrize("cursor", [None, "0"])
@bounded()
async def test_no_cursor_and_cursor_zero_start_at_the_first_event(
    bridge: Any, cursor: str | None
) -> None:
    """Cursor "0" means "from the first event"; so does no cursor at the bridge level."""
    run = new_run()
    await fill(bridge, run, 3)
    async with subscription(bridge, run, cursor) as sub:
        assert ids(await take(sub, 3)) == [1, 2, 3]
        await bridge.publish(run, "values", data_for(4))
        assert ids([await nxt(sub)]) == [4]


@bounded()
async def test_cursor_at_the_newest_event_waits_for_the_next(bridge: Any) -> None:
    """A cursor equal to the newest id is valid: heartbeats, then the next event."""
    run = new_run()
    await fill(bridge, run, 3)
    async with subscription(bridge, run, "3") as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        await bridge.publish(run, "values", data_for(4))
        item = await nxt(sub)
        assert (item.id, item.data) == ("4", data_for(4))


@bounded(5)
async def test_cursor_at_the_terminal_event_just_stops(bridge: Any) -> None:
    """Subscribers stop after the terminal entry; resuming after it yields no event."""
    run = new_run()
    await fill(bridge, run, 2)
    await bridge.publish_end(run)  # id 3
    async with subscription(bridge, run, "3") as sub:
        rest = [item async for item in sub]
    assert all(item is END_SENTINEL for item in rest), rest


MALFORMED_CURSORS = [
    "abc",
    "-1",
    "01",
    "00",
    "1.5",
    "",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "-",
    "0-1",
    "1-0",
    "1e3",
    "1_0",
    "0x1",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: int() accepts it, the grammar does not
]


@pytest.mark.parametrize("cursor", MALFORMED_CURSORS, ids=repr)
@pytest.mark.parametrize("stream", ["existing", "missing"])
@bounded()
async def test_malformed_cursor_raises_value_error(bridge: Any, cursor: str, stream: str) -> None:
    """Cursors match 0|[1-9][0-9]*; anything else raises ValueError no later than
    the first __anext__."""
    run = new_run()
    if stream == "existing":
        await fill(bridge, run, 12)
    with pytest.raises(ValueError):  # noqa: PT011 - the message is not part of the contract
        async with subscription(bridge, run, cursor) as sub:
            await sub.__anext__()
    assert await bridge.stream_exists(run) == (stream == "existing")


@pytest.mark.parametrize("ahead", [1, 2, 1000, 10**30])
@pytest.mark.parametrize("terminal", [False, True])
@bounded()
async def test_cursor_from_the_future_raises_value_error(
    bridge: Any, ahead: int, terminal: bool
) -> None:
    """A number beyond the newest id of an existing stream raises ValueError no
    later than the first __anext__."""
    run = new_run()
    await fill(bridge, run, 3)
    newest = 3
    if terminal:
        newest = int(await bridge.publish_end(run))
    with pytest.raises(ValueError):  # noqa: PT011
        async with subscription(bridge, run, str(newest + ahead)) as sub:
            await sub.__anext__()
    # The bridge is unharmed.
    assert ids(await read_first(bridge, run, newest)) == list(range(1, newest + 1))


# --- gaps -------------------------------------------------------------------


async def oldest_retained(bridge: StreamBridge, run: str, newest: int) -> int:
    """The oldest retained id, as seen through a cursor-"0" subscription."""
    async with subscription(bridge, run, "0") as sub:
        items = await take_until_id(sub, str(newest))
    first = items[0]
    if isinstance(first, StreamGap):
        assert first.earliest_available_event_id is not None
        return int(first.earliest_available_event_id)
    return int(first.id)


@bounded(40)
async def test_gap_on_a_count_trimmed_cursor(make_bridge: BridgeFactory, backend: str) -> None:
    """A cursor older than the oldest retained event (count trimming) first gets one
    StreamGap(run_id, cursor, oldest retained, newest), then the oldest retained events."""
    limit, n = 5, 300
    bridge = await make_bridge(max_events_per_stream=limit)
    run = new_run()
    await fill(bridge, run, n)
    earliest = await oldest_retained(bridge, run, n)
    assert earliest > 1, "nothing was trimmed"
    assert n - earliest + 1 >= limit, "fewer events than the limit were kept"
    if backend == "memory":
        assert earliest == n - limit + 1
    cursors = sorted({"0", "1", str(earliest - 2)} - {"-1"}, key=int)
    for cursor in cursors:
        if cursor != "0" and int(cursor) >= earliest - 1:
            continue
        async with subscription(bridge, run, cursor) as sub:
            items = await take_until_id(sub, str(n))
            gap = items[0]
            assert isinstance(gap, StreamGap), items[:2]
            assert gap.run_id == run
            assert gap.requested_event_id == cursor
            assert gap.earliest_available_event_id == str(earliest)
            assert gap.latest_available_event_id == str(n)
            assert ids(items[1:]) == list(range(earliest, n + 1))
            assert len(gaps(items)) == 1
            # ... and it continues live after the retained events.
            await bridge.publish(run, "values", data_for(n + 1))
            assert ids([await nxt(sub)]) == [n + 1]
        n += 1
        earliest = await oldest_retained(bridge, run, n)


@bounded(40)
async def test_gap_on_an_ended_stream_reports_the_terminal_as_newest(
    make_bridge: BridgeFactory, backend: str
) -> None:
    """latest_available_event_id is the newest id at the time of the gap (the terminal
    entry's, once the stream has ended); the retained events and the terminal follow."""
    limit, n = 5, 300
    bridge = await make_bridge(max_events_per_stream=limit)
    run = new_run()
    await fill(bridge, run, n)
    terminal = await bridge.publish_end(run)
    assert terminal == str(n + 1)
    items = await read_all(bridge, run, "1")
    gap = items[0]
    assert isinstance(gap, StreamGap), items[:2]
    assert (gap.run_id, gap.requested_event_id) == (run, "1")
    assert gap.latest_available_event_id == terminal
    assert gap.earliest_available_event_id is not None
    earliest = int(gap.earliest_available_event_id)
    if backend == "memory":
        assert earliest == n - limit + 1
    assert ids(items[1:]) == list(range(earliest, n + 2))
    assert items[-1].event == "end"


@bounded(40)
async def test_cursor_right_before_the_oldest_retained_event_has_no_gap(
    make_bridge: BridgeFactory,
) -> None:
    """Resume is strictly after the cursor: if that event is retained, nothing was lost."""
    n = 300
    bridge = await make_bridge(max_events_per_stream=5)
    run = new_run()
    await fill(bridge, run, n)
    earliest = await oldest_retained(bridge, run, n)
    assert earliest > 1
    async with subscription(bridge, run, str(earliest - 1)) as sub:
        items = await take_until_id(sub, str(n))
    assert not gaps(items)
    assert ids(items) == list(range(earliest, n + 1))


@pytest.mark.parametrize("cursor", [None, "0"])
@bounded(40)
async def test_gap_for_a_subscriber_from_the_start_when_the_first_event_is_gone(
    make_bridge: BridgeFactory, backend: str, cursor: str | None
) -> None:
    """The same holds for a subscriber without a cursor when the run's first event
    is gone: StreamGap(run_id, None, oldest, newest), then the oldest retained events."""
    limit, n = 5, 300
    bridge = await make_bridge(max_events_per_stream=limit)
    run = new_run()
    await fill(bridge, run, n)
    async with subscription(bridge, run, cursor) as sub:
        items = await take_until_id(sub, str(n))
    gap = items[0]
    assert isinstance(gap, StreamGap), items[:2]
    assert gap.run_id == run
    assert gap.requested_event_id == cursor
    assert gap.latest_available_event_id == str(n)
    assert gap.earliest_available_event_id is not None
    earliest = int(gap.earliest_available_event_id)
    assert 1 < earliest <= n - limit + 1
    if backend == "memory":
        assert earliest == n - limit + 1
    assert ids(items[1:]) == list(range(earliest, n + 1))
    assert len(gaps(items)) == 1


@bounded(40)
async def test_gap_on_a_byte_trimmed_cursor(make_bridge: BridgeFactory, backend: str) -> None:
    """Byte trimming also never skips silently (byte limit best-effort on Redis, so
    only memory must have trimmed; whatever was trimmed is reported exactly)."""
    max_bytes, blob, n = 8_000, "x" * 1_000, 40
    bridge = await make_bridge(max_bytes_per_stream=max_bytes, max_events_per_stream=100_000)
    run = new_run()
    for i in range(1, n + 1):
        await bridge.publish(run, "values", {"i": i, "blob": blob})
    earliest = await oldest_retained(bridge, run, n)
    if backend == "memory":
        assert earliest > 1, "the byte limit trimmed nothing"
    for cursor in ("0", "1"):
        async with subscription(bridge, run, cursor) as sub:
            items = await take_until_id(sub, str(n))
        if earliest > int(cursor) + 1:
            gap = items[0]
            assert isinstance(gap, StreamGap), items[:2]
            assert gap.run_id == run
            assert gap.requested_event_id == cursor
            assert gap.earliest_available_event_id == str(earliest)
            assert gap.latest_available_event_id == str(n)
            items = items[1:]
        assert not gaps(items)
        assert ids(items) == list(range(max(earliest, int(cursor) + 1), n + 1))
        assert all(item.data == {"i": int(item.id), "blob": blob} for item in items)
    if backend == "memory":
        retained = n - earliest + 1
        assert retained >= 1
        assert retained * len(json.dumps({"i": n, "blob": blob})) <= max_bytes


@memory_only
@bounded()
async def test_lagging_subscriber_gets_an_exact_gap(make_bridge: BridgeFactory) -> None:
    """A live subscriber overtaken by trimming gets StreamGap(run, its cursor,
    oldest retained, newest) and continues from the oldest retained event."""
    bridge = await make_bridge(max_events_per_stream=5)
    run = new_run()
    await fill(bridge, run, 3)
    async with subscription(bridge, run) as sub:
        assert ids(await take(sub, 2)) == [1, 2]
        await fill(bridge, run, 20, first=4)  # 4..23; 19..23 retained
        items = await take_until_id(sub, "23")
    gap = items[0]
    assert isinstance(gap, StreamGap), items[:2]
    assert (gap.run_id, gap.requested_event_id) == (run, "2")
    assert (gap.earliest_available_event_id, gap.latest_available_event_id) == ("19", "23")
    assert ids(items[1:]) == list(range(19, 24))


@bounded(40)
async def test_lagging_subscriber_never_skips_silently(make_bridge: BridgeFactory) -> None:
    """Never skip silently: a subscriber that falls behind trimming gets a gap."""
    bridge = await make_bridge(max_events_per_stream=5)
    run = new_run()
    await fill(bridge, run, 3)
    async with subscription(bridge, run) as sub:
        head = await take(sub, 2)
        await fill(bridge, run, 400, first=4)
        items = head + await take_until_id(sub, "403")
    check_no_silent_skip(items, run_id=run, cursor=None)
    assert ids(items)[-1] == 403


@pytest.mark.parametrize("limit", ["count", "bytes"])
@bounded()
async def test_terminal_entry_does_not_count_against_retention(
    make_bridge: BridgeFactory, limit: str
) -> None:
    """The terminal entry never counts against the retention limits and is never trimmed."""
    if limit == "count":
        bridge = await make_bridge(max_events_per_stream=3)
        events = [data_for(i) for i in (1, 2, 3)]
        terminal_data: Any = {"error": "boom"}
    else:
        bridge = await make_bridge(max_bytes_per_stream=4_000, max_events_per_stream=1_000)
        events = [{"i": i, "blob": "x" * 500} for i in (1, 2, 3)]
        terminal_data = {"error": "y" * 20_000}
    run = new_run()
    for data in events:
        await bridge.publish(run, "values", data)
    assert await bridge.publish_terminal(run, StreamStatus.ERRORED, terminal_data) == "4"
    items = await read_all(bridge, run, "0")
    assert not gaps(items)
    assert ids(items) == [1, 2, 3, 4]
    assert [item.data for item in items] == [*events, terminal_data]
    assert items[-1].event == "error"


# --- terminal entries -------------------------------------------------------


@pytest.mark.parametrize("kind", list(KIND_NAMES), ids=lambda k: k.name)
@bounded()
async def test_terminal_kinds_map_to_names(bridge: Any, kind: StreamStatus) -> None:
    """ENDED->end, CANCELLED->cancel, ERRORED->error; get_status reports the kind."""
    run = new_run()
    await fill(bridge, run, 2)
    assert await bridge.publish_terminal(run, kind) == "3"
    items = await read_all(bridge, run)
    assert [item.event for item in items] == ["values", "values", KIND_NAMES[kind]]
    assert await bridge.get_status(run) == kind


@bounded()
async def test_publish_end_and_cancel(bridge: Any) -> None:
    """publish_end writes "end"; cancel() writes "cancel" and returns the entry's id."""
    ended, cancelled = new_run(), new_run()
    await fill(bridge, ended, 1)
    await fill(bridge, cancelled, 4)
    assert await bridge.publish_end(ended) == "2"
    assert await bridge.cancel(cancelled) == "5"
    assert (await read_all(bridge, ended))[-1].event == "end"
    last = (await read_all(bridge, cancelled))[-1]
    assert (last.id, last.event) == ("5", "cancel")
    assert await bridge.get_status(ended) == StreamStatus.ENDED
    assert await bridge.get_status(cancelled) == StreamStatus.CANCELLED


@pytest.mark.parametrize("data", [{"error": "ValueError", "message": "bad"}, ["x", 1], "text"])
@bounded()
async def test_terminal_data_round_trips(bridge: Any, data: Any) -> None:
    """data comes back as a JSON round trip of what was published (terminal too)."""
    run = new_run()
    await bridge.publish_terminal(run, StreamStatus.ERRORED, data)
    (item,) = await read_all(bridge, run)
    assert (item.id, item.event, item.data) == ("1", "error", data)


FIRST_CALLS: dict[str, Callable[[Any, str], Awaitable[str]]] = {
    "publish_end": lambda b, r: b.publish_end(r),
    "cancel": lambda b, r: b.cancel(r),
    "error": lambda b, r: b.publish_terminal(r, StreamStatus.ERRORED, {"e": 1}),
}
FIRST_STATUS = {
    "publish_end": StreamStatus.ENDED,
    "cancel": StreamStatus.CANCELLED,
    "error": StreamStatus.ERRORED,
}


@pytest.mark.parametrize("second", list(FIRST_CALLS))
@pytest.mark.parametrize("first", list(FIRST_CALLS))
@bounded()
async def test_exactly_one_terminal_entry_and_repeated_calls_are_idempotent(
    bridge: Any, first: str, second: str
) -> None:
    """A stream ends with exactly one terminal entry; repeated terminal calls are
    idempotent (same id, no new entry, first kind wins)."""
    run = new_run()
    await fill(bridge, run, 2)
    terminal_id = await FIRST_CALLS[first](bridge, run)
    assert terminal_id == "3"
    assert await FIRST_CALLS[second](bridge, run) == terminal_id
    assert await FIRST_CALLS[first](bridge, run) == terminal_id
    items = await read_all(bridge, run)
    assert ids(items) == [1, 2, 3]
    assert sum(is_terminal(item) for item in items) == 1
    assert await bridge.get_status(run) == FIRST_STATUS[first]


@pytest.mark.parametrize("first", list(FIRST_CALLS))
@bounded()
async def test_publish_after_the_terminal_entry_raises(bridge: Any, first: str) -> None:
    """Publishing after the terminal entry raises StreamTerminatedError."""
    run = new_run()
    await fill(bridge, run, 1)
    await FIRST_CALLS[first](bridge, run)
    with pytest.raises(StreamTerminatedError):
        await bridge.publish(run, "values", data_for(3))
    assert ids(await read_all(bridge, run)) == [1, 2]


@pytest.mark.parametrize("kind", ["ACTIVE", "CLOSED"])
@pytest.mark.parametrize("stream", ["existing", "missing"])
@bounded()
async def test_non_terminal_kind_raises_value_error(bridge: Any, kind: str, stream: str) -> None:
    """A non-terminal kind raises ValueError (and writes nothing)."""
    run = new_run()
    if stream == "existing":
        await fill(bridge, run, 1)
    with pytest.raises(ValueError):  # noqa: PT011
        await bridge.publish_terminal(run, StreamStatus[kind])
    if stream == "missing":
        assert await bridge.stream_exists(run) is False
        assert await bridge.get_status(run) is None
    else:
        assert await bridge.get_status(run) == StreamStatus.ACTIVE
        assert await bridge.publish(run, "values", data_for(2)) == "2"


@pytest.mark.parametrize("call", list(FIRST_CALLS))
@bounded()
async def test_terminal_call_on_a_run_without_a_stream_creates_just_that_entry(
    bridge: Any, call: str
) -> None:
    """A terminal call on a run without a stream creates it with just that entry."""
    run = new_run()
    assert await FIRST_CALLS[call](bridge, run) == "1"
    assert await bridge.stream_exists(run) is True
    assert await bridge.get_status(run) == FIRST_STATUS[call]
    for cursor in (None, "0"):
        items = await read_all(bridge, run, cursor)
        assert len(items) == 1
        assert items[0].id == "1"
        assert items[0].event == KIND_NAMES[FIRST_STATUS[call]]


@bounded()
async def test_subscriber_stops_right_after_the_terminal_entry(bridge: Any) -> None:
    """Subscribers stop after the terminal entry; no sentinel is sent after it."""
    run = new_run()
    await fill(bridge, run, 2)
    async with subscription(bridge, run) as sub:
        assert ids(await take(sub, 2)) == [1, 2]
        await bridge.publish_end(run)
        last = await nxt(sub)
        assert (last.id, last.event) == ("3", "end")
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


@bounded()
async def test_an_error_data_event_is_not_terminal(bridge: Any) -> None:
    """A failure's error frame is an ordinary data event published before the terminal."""
    run = new_run()
    await bridge.publish(run, "error", {"error": "ValueError", "message": "bad"})
    assert await bridge.get_status(run) == StreamStatus.ACTIVE
    assert await bridge.publish(run, "values", data_for(2)) == "2"
    await bridge.publish_terminal(run, StreamStatus.ERRORED)
    items = await read_all(bridge, run, strict=False)
    assert [(item.id, item.event) for item in items] == [
        ("1", "error"),
        ("2", "values"),
        ("3", "error"),
    ]


# --- no zombies, heartbeats, fan-out -----------------------------------------


@pytest.mark.parametrize("cursor", [None, "0"])
@bounded()
async def test_subscribe_creates_no_stream_and_waits_with_heartbeats(
    bridge: Any, cursor: str | None
) -> None:
    """Subscribing to a run with no stream creates nothing and waits for the
    stream to appear, yielding heartbeats."""
    run = new_run()
    async with subscription(bridge, run, cursor) as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        assert await bridge.stream_exists(run) is False
        assert await bridge.get_status(run) is None
        await bridge.publish(run, "values", data_for(1))
        first = await nxt(sub)
        assert (first.id, first.event, first.data) == ("1", "values", data_for(1))
        await bridge.publish_end(run)
        assert [item.id for item in await drain(sub)] == ["2"]


@bounded()
async def test_waiting_subscriber_sees_a_stream_created_by_a_terminal_call(bridge: Any) -> None:
    """A terminal call creates the stream; a waiting subscriber gets that entry and stops."""
    run = new_run()
    async with subscription(bridge, run) as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        assert await bridge.cancel(run) == "1"
        items = await drain(sub)
    assert [(item.id, item.event) for item in items] == [("1", "cancel")]


@bounded()
async def test_subscription_opened_before_the_first_publish_sees_it(bridge: Any) -> None:
    """The subscriber's position is fixed when it subscribes, not when it first reads."""
    run = new_run()
    async with subscription(bridge, run) as sub:
        await bridge.publish(run, "values", data_for(1))
        await bridge.publish(run, "values", data_for(2))
        assert ids(await take(sub, 2)) == [1, 2]


@bounded()
async def test_heartbeats_while_caught_up_on_an_active_stream(bridge: Any) -> None:
    """Heartbeats (HEARTBEAT_SENTINEL) while idle."""
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run) as sub:
        assert ids([await sub.__anext__()]) == [1]
        for _ in range(3):
            assert await sub.__anext__() is HEARTBEAT_SENTINEL


@bounded()
async def test_mark_awaiting_input_on_a_missing_run_creates_nothing(bridge: Any) -> None:
    """No zombies: only publish or a terminal call creates a stream."""
    run = new_run()
    await bridge.mark_awaiting_input(run)
    assert await bridge.stream_exists(run) is False
    assert await bridge.get_status(run) is None


@bounded(40)
async def test_fan_out_with_independent_cursors(bridge: Any) -> None:
    """Fan-out to any number of subscribers, each with its own cursor."""
    run = new_run()
    await fill(bridge, run, 5)
    cursors = [None, "0", "1", "3", "5"] * 8
    results: list[list[Any]] = [[] for _ in cursors]

    async def consume(index: int, cursor: str | None) -> None:
        results[index] = await read_all(bridge, run, cursor)

    async with anyio.create_task_group() as tg:
        for index, cursor in enumerate(cursors):
            tg.start_soon(consume, index, cursor)
        for i in range(6, 31):
            await bridge.publish(run, "values", data_for(i))
            await anyio.lowlevel.checkpoint()
        await bridge.publish_end(run)  # id 31
    for cursor, items in zip(cursors, results, strict=True):
        start = int(cursor) if cursor else 0
        assert ids(items) == list(range(start + 1, 32)), cursor
        assert all(item.data == data_for(int(item.id)) for item in items[:-1])


@bounded(60)
async def test_fan_out_to_many_live_subscribers(bridge: Any) -> None:
    """Every subscriber gets every event once, in order."""
    run = new_run()
    count = 100
    results: list[list[int]] = [[] for _ in range(count)]
    ready = 0
    all_ready = anyio.Event()

    async def consume(index: int) -> None:
        nonlocal ready
        async with subscription(bridge, run) as sub:
            seen_heartbeat = False
            async for item in sub:
                if item is HEARTBEAT_SENTINEL:
                    if not seen_heartbeat:
                        seen_heartbeat = True
                        ready += 1
                        if ready == count:
                            all_ready.set()
                    continue
                results[index].append(int(item.id))

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(consume, index)
        await all_ready.wait()  # every subscriber is waiting on the missing stream
        await fill(bridge, run, 30)
        await bridge.publish_end(run)
    assert all(seen == list(range(1, 32)) for seen in results)


@bounded(60)
async def test_a_slow_subscriber_loses_nothing_while_others_read(
    make_bridge: BridgeFactory,
) -> None:
    """No loss for a subscriber that stops reading for a while (nothing was trimmed,
    so no gap either), while a fast subscriber keeps up."""
    bridge = await make_bridge(max_events_per_stream=100_000)
    run = new_run()
    total = 2_000
    fast: list[Any] = []

    async def read_fast() -> None:
        fast.extend(await read_all(bridge, run))

    async with subscription(bridge, run) as slow, anyio.create_task_group() as tg:
        tg.start_soon(read_fast)
        await fill(bridge, run, 1)
        head = [await nxt(slow)]  # attached, then it stops reading
        for i in range(2, total + 1):
            await bridge.publish(run, "values", data_for(i))
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()  # let the fast reader (and any hub) run
        await bridge.publish_end(run)
        rest = await drain(slow)
    assert ids(head + rest) == list(range(1, total + 2))
    assert ids(fast) == list(range(1, total + 2))
    assert not gaps(head + rest)


# --- data -------------------------------------------------------------------

ROUND_TRIP_VALUES = [
    {"a": 1, "b": [1, 2, {"c": None}], "d": "h\u00e9llo \u2603", "e": 1.5, "f": True},
    [1, "two", 3.0, None, False],
    "just a string",
    "",
    42,
    -7,
    2**53 + 1,
    0.1,
    None,
    True,
    {"": ""},
    (1, 2),
    {"nested": ({"t": (1,)},)},
    {"quote": 'a "b" \\ c\n\t\u0000'},
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
@bounded()
async def test_data_is_a_json_round_trip(bridge: Any, value: Any) -> None:
    """data comes back as a JSON round trip of what was published."""
    run = new_run()
    await bridge.publish(run, "messages/partial", value)
    async with subscription(bridge, run) as sub:
        item = await nxt(sub)
    expected = json.loads(json.dumps(value))
    assert item.event == "messages/partial"
    assert item.data == expected
    assert type(item.data) is type(expected)
    payload = getattr(item, "payload", None)
    if payload is not None:
        assert json.loads(payload) == item.data


@bounded()
async def test_published_data_is_not_shared_with_the_publisher(bridge: Any) -> None:
    """A JSON round trip: later changes to the published object do not leak."""
    run = new_run()
    data: dict[str, Any] = {"x": [1]}
    await bridge.publish(run, "values", data)
    data["x"].append(2)
    data["y"] = 1
    async with subscription(bridge, run) as sub:
        item = await nxt(sub)
    assert item.data == {"x": [1]}


# --- status, existence, stats -----------------------------------------------


@bounded()
async def test_get_status_and_stream_exists(bridge: Any) -> None:
    """get_status(run_id) -> StreamStatus | None; stream_exists tells if a stream exists."""
    run = new_run()
    assert await bridge.get_status(run) is None
    assert await bridge.stream_exists(run) is False
    await fill(bridge, run, 1)
    assert await bridge.get_status(run) == StreamStatus.ACTIVE
    assert await bridge.stream_exists(run) is True
    await bridge.publish_end(run)
    assert await bridge.get_status(run) == StreamStatus.ENDED
    assert await bridge.stream_exists(run) is True
    await bridge.cleanup(run)
    assert await bridge.get_status(run) is None
    assert await bridge.stream_exists(run) is False


@bounded()
async def test_get_stats_keys_and_counts(bridge: Any) -> None:
    """get_stats() is sync and returns at least the seed's keys (this process's view)."""
    stats = bridge.get_stats()
    assert not inspect.isawaitable(stats)
    assert set(stats) >= SEED_STATS_KEYS
    assert stats["closed"] is False
    active, ended = new_run(), new_run()
    await fill(bridge, active, 2)
    await fill(bridge, ended, 1)
    await bridge.publish_end(ended)
    async with subscription(bridge, active) as sub:
        await nxt(sub)  # attached
        stats = bridge.get_stats()
        assert stats["total_streams"] == 2
        assert stats["active_streams"] == 1
        assert stats["terminal_streams"] == 1
        assert stats["total_subscribers"] == 1
        for key in ("total_events", "total_bytes"):
            assert isinstance(stats[key], int)
            assert stats[key] >= 0
    assert bridge.get_stats()["total_subscribers"] == 0


# --- close ------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["existing", "missing"])
@bounded()
async def test_close_gives_waiting_subscribers_cancelled_sentinel(bridge: Any, stream: str) -> None:
    """close() gives every subscriber CANCELLED_SENTINEL (and they stop)."""
    run = new_run()
    if stream == "existing":
        await fill(bridge, run, 1)
    consumers: list[Consumer] = []
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        for _ in range(3):
            consumer = Consumer(await stack.enter_async_context(subscription(bridge, run)))
            consumers.append(consumer)
            tg.start_soon(consumer.run)
        for consumer in consumers:
            await consumer.waiting.wait()
        await bridge.close()
    for consumer in consumers:
        expected = [1] if stream == "existing" else []
        assert ids(consumer.items) == expected
        assert consumer.items[-1] is CANCELLED_SENTINEL


@bounded()
async def test_close_reaches_a_subscriber_suspended_between_reads(bridge: Any) -> None:
    """close() gives every subscriber CANCELLED_SENTINEL, also one not inside a read."""
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run, "1") as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        await bridge.close()
        assert await nxt(sub) is CANCELLED_SENTINEL
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


@pytest.mark.parametrize("action", ["close", "cleanup"])
@bounded()
async def test_no_sentinel_after_the_terminal_entry(bridge: Any, action: str) -> None:
    """Sentinels are never sent after a terminal entry (not even on close or cleanup)."""
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.publish_end(run)
    async with subscription(bridge, run) as sub:
        assert [(item.id, item.event) for item in await take(sub, 2)] == [
            ("1", "values"),
            ("2", "end"),
        ]
        if action == "close":
            await bridge.close()
        else:
            await bridge.cleanup(run)
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


CLOSED_CALLS: dict[str, Callable[[Any, str], Awaitable[Any]]] = {
    "publish": lambda b, r: b.publish(r, "values", 1),
    "publish_end": lambda b, r: b.publish_end(r),
    "publish_terminal": lambda b, r: b.publish_terminal(r, StreamStatus.ERRORED),
    "cancel": lambda b, r: b.cancel(r),
    "stream_exists": lambda b, r: b.stream_exists(r),
    "get_status": lambda b, r: b.get_status(r),
    "mark_awaiting_input": lambda b, r: b.mark_awaiting_input(r),
    "cleanup": lambda b, r: b.cleanup(r),
}


async def _subscribe_first(bridge: Any, run: str) -> None:
    async with subscription(bridge, run) as sub:
        await sub.__anext__()


CLOSED_CALLS["subscribe"] = _subscribe_first


@pytest.mark.parametrize("call", list(CLOSED_CALLS))
@bounded()
async def test_calls_after_close_raise_bridge_closed_error(bridge: Any, call: str) -> None:
    """After close(), later calls raise BridgeClosedError."""
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.close()
    with pytest.raises(BridgeClosedError):
        await CLOSED_CALLS[call](bridge, run)


@bounded()
async def test_get_stats_after_close_reports_closed(bridge: Any) -> None:
    """get_stats() has a "closed" key; it says True once the bridge is closed."""
    await bridge.close()
    assert bridge.get_stats()["closed"] is True


# --- cleanup ----------------------------------------------------------------


@bounded()
async def test_cleanup_gives_an_attached_subscriber_end_sentinel(bridge: Any) -> None:
    """A subscriber still attached to a removed stream gets END_SENTINEL."""
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run) as sub:
        consumer = Consumer(sub)
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            await consumer.waiting.wait()
            await bridge.cleanup(run)
    assert ids(consumer.items) == [1]
    assert consumer.items[-1] is END_SENTINEL
    assert await bridge.stream_exists(run) is False


@bounded()
async def test_cleanup_of_a_suspended_subscriber_stream(bridge: Any) -> None:
    """Same rule when the subscriber is between reads (suspended at a heartbeat)."""
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run, "1") as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        await bridge.cleanup(run)
        assert await nxt(sub) is END_SENTINEL
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


# --- housekeeping (fake clock) ----------------------------------------------


@bounded()
async def test_no_publish_timeout_writes_dead_letter(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """An active stream with no publish for active_no_publish_timeout gets a
    dead_letter entry (status ERRORED); subscribers get it and stop."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, **QUIET)
    run = new_run()
    await fill(bridge, run, 2)
    async with subscription(bridge, run, "2") as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        clock.advance(20)
        await bridge.sweep()
        assert await bridge.get_status(run) == StreamStatus.ACTIVE
        clock.advance(20)
        await bridge.sweep()
        assert await bridge.get_status(run) == StreamStatus.ERRORED
        items = await drain(sub)
    assert [(item.id, item.event) for item in items] == [("3", "dead_letter")]
    with pytest.raises(StreamTerminatedError):
        await bridge.publish(run, "values", data_for(4))
    # Exactly one terminal entry, even after more sweeps.
    clock.advance(100)
    await bridge.sweep()
    if await bridge.stream_exists(run):
        assert ids(await read_all(bridge, run)) == [1, 2, 3]


@bounded()
async def test_publish_restarts_the_no_publish_timer(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """The timeout counts from the last publish."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, **QUIET)
    run = new_run()
    for i in range(1, 6):
        await bridge.publish(run, "values", data_for(i))
        clock.advance(20)
        await bridge.sweep()
        assert await bridge.get_status(run) == StreamStatus.ACTIVE


@bounded()
async def test_mark_awaiting_input_extends_the_timeout_from_the_mark(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """After mark_awaiting_input the timeout is hitl_extended_timeout, measured from the mark."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, hitl_extended_timeout=300.0, **QUIET)
    run = new_run()
    await fill(bridge, run, 1)
    clock.advance(20)
    await bridge.mark_awaiting_input(run)
    clock.advance(280)  # 300 since the publish, 280 since the mark
    await bridge.sweep()
    assert await bridge.get_status(run) == StreamStatus.ACTIVE
    clock.advance(40)  # 320 since the mark
    await bridge.sweep()
    assert await bridge.get_status(run) == StreamStatus.ERRORED
    last = (await read_all(bridge, run))[-1]
    assert (last.id, last.event) == ("2", "dead_letter")


@bounded()
async def test_next_publish_clears_the_awaiting_input_mark(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """The next publish clears the mark: the ordinary timeout applies again."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, hitl_extended_timeout=300.0, **QUIET)
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.mark_awaiting_input(run)
    clock.advance(10)
    await bridge.publish(run, "values", data_for(2))
    clock.advance(40)  # > 30 since the publish, < 300
    await bridge.sweep()
    assert await bridge.get_status(run) == StreamStatus.ERRORED
    last = (await read_all(bridge, run))[-1]
    assert (last.id, last.event) == ("3", "dead_letter")


@bounded()
async def test_max_stream_age_writes_dead_letter(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """An active stream older than max_stream_age gets a dead_letter entry."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, max_stream_age=100.0, **QUIET)
    run = new_run()
    await fill(bridge, run, 1)
    for i in range(2, 6):  # publishes at 20, 40, 60, 80
        clock.advance(20)
        await bridge.publish(run, "values", data_for(i))
        await bridge.sweep()
        assert await bridge.get_status(run) == StreamStatus.ACTIVE
    clock.advance(25)  # age 105, 25 since the last publish
    await bridge.publish(run, "values", data_for(6))
    await bridge.sweep()
    assert await bridge.get_status(run) == StreamStatus.ERRORED
    items = await read_all(bridge, run)
    assert [(item.id, item.event) for item in items][-2:] == [("6", "values"), ("7", "dead_letter")]


@bounded()
async def test_housekeeping_adds_nothing_to_a_terminal_stream(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """Exactly one terminal entry: timeouts do not dead-letter an ended stream."""
    bridge = await make_bridge(
        active_no_publish_timeout=30.0,
        max_stream_age=100.0,
        orphan_timeout=1e6,
        terminal_retention_ttl=1e6,
        **QUIET,
    )
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.publish_end(run)
    clock.advance(500)
    await bridge.sweep()
    assert await bridge.get_status(run) == StreamStatus.ENDED
    items = await read_all(bridge, run)
    assert [(item.id, item.event) for item in items] == [("1", "values"), ("2", "end")]


@bounded()
async def test_cleanup_loop_runs_housekeeping_by_itself(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """start() runs a cleanup loop every cleanup_interval (no sweep() call here)."""
    bridge = await make_bridge(active_no_publish_timeout=30.0, cleanup_interval=0.05)
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run, "1") as sub:
        clock.advance(60)
        item = await nxt(sub)
    assert (item.id, item.event) == ("2", "dead_letter")


def terminal_limits(orphan: float, ttl: float) -> dict[str, Any]:
    return {
        "orphan_timeout": orphan,
        "terminal_retention_ttl": ttl,
        "active_no_publish_timeout": 1e6,
        "max_stream_age": 1e7,
        **QUIET,
    }


@memory_only
@bounded()
async def test_terminal_stream_removed_after_orphan_timeout(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """A terminal stream with no subscriber is removed orphan_timeout after its end."""
    bridge = await make_bridge(**terminal_limits(orphan=30.0, ttl=1000.0))
    run = new_run()
    await fill(bridge, run, 1)
    clock.advance(500)  # time before the end does not count
    await bridge.publish_end(run)
    clock.advance(20)
    await bridge.sweep()
    assert await bridge.stream_exists(run) is True
    clock.advance(20)
    await bridge.sweep()
    assert await bridge.stream_exists(run) is False
    assert await bridge.get_status(run) is None


@memory_only
@bounded()
async def test_orphan_timeout_counts_from_the_last_subscription(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """orphan_timeout counts from the later of the end and the last subscription."""
    bridge = await make_bridge(**terminal_limits(orphan=30.0, ttl=1000.0))
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.publish_end(run)
    clock.advance(20)
    assert ids(await read_all(bridge, run)) == [1, 2]
    clock.advance(20)  # 40 since the end, 20 since the subscription
    await bridge.sweep()
    assert await bridge.stream_exists(run) is True
    clock.advance(20)
    await bridge.sweep()
    assert await bridge.stream_exists(run) is False


@memory_only
@bounded()
async def test_terminal_retention_ttl_counts_from_the_end(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """... or terminal_retention_ttl since its end, whatever the subscriptions."""
    bridge = await make_bridge(**terminal_limits(orphan=1000.0, ttl=30.0))
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.publish_end(run)
    clock.advance(20)
    await bridge.sweep()
    assert await bridge.stream_exists(run) is True
    assert ids(await read_all(bridge, run)) == [1, 2]
    clock.advance(20)  # 40 since the end
    await bridge.sweep()
    assert await bridge.stream_exists(run) is False


@memory_only
@bounded()
async def test_attached_subscriber_keeps_a_terminal_stream(
    make_bridge: BridgeFactory, clock: FakeClock
) -> None:
    """Only a terminal stream with no subscriber attached is removed."""
    bridge = await make_bridge(**terminal_limits(orphan=30.0, ttl=30.0))
    run = new_run()
    await fill(bridge, run, 2)
    async with subscription(bridge, run) as sub:
        assert ids([await nxt(sub)]) == [1]  # attached, two entries unread
        await bridge.publish_end(run)
        clock.advance(100)
        await bridge.sweep()
        assert await bridge.stream_exists(run) is True
        rest = await drain(sub)
        assert [(item.id, item.event) for item in rest] == [("2", "values"), ("3", "end")]
    clock.advance(1)
    await bridge.sweep()
    assert await bridge.stream_exists(run) is False


@redis_only
@bounded(30)
async def test_redis_terminal_stream_expires(make_bridge: BridgeFactory) -> None:
    """Redis: terminal streams expire by key TTL (a real 1 s TTL; polls, asserts no time)."""
    bridge = await make_bridge(orphan_timeout=1.0, terminal_retention_ttl=1.0)
    run = new_run()
    await fill(bridge, run, 1)
    await bridge.publish_end(run)
    assert await bridge.stream_exists(run) is True
    while await bridge.stream_exists(run):  # noqa: ASYNC110 - Redis expiry sends no event
        await anyio.sleep(0.1)


# --- capacity (best-effort on Redis, so memory only) --------------------------


@memory_only
@bounded()
async def test_reject_policy_refuses_a_stream_beyond_the_limit(
    make_bridge: BridgeFactory,
) -> None:
    """max_active_streams with the reject policy raises StreamCapacityExceededError."""
    bridge = await make_bridge(max_active_streams=2, stream_eviction_policy="reject")
    first, second, third = new_run(), new_run(), new_run()
    await fill(bridge, first, 1)
    await fill(bridge, second, 1)
    with pytest.raises(StreamCapacityExceededError):
        await bridge.publish(third, "values", 1)
    assert await bridge.stream_exists(third) is False
    assert await bridge.publish(first, "values", 2) == "2"  # existing streams go on


@memory_only
@bounded()
async def test_lru_policy_evicts_a_terminal_stream_never_an_active_one(
    make_bridge: BridgeFactory,
) -> None:
    """lru makes room by evicting a terminal stream; with none, it refuses."""
    bridge = await make_bridge(max_active_streams=2, stream_eviction_policy="lru")
    done, live, newcomer, extra = new_run(), new_run(), new_run(), new_run()
    await fill(bridge, done, 1)
    await bridge.publish_end(done)
    await fill(bridge, live, 1)
    assert await bridge.publish(newcomer, "values", 1) == "1"
    assert await bridge.get_status(live) == StreamStatus.ACTIVE
    assert await bridge.get_status(newcomer) == StreamStatus.ACTIVE
    with pytest.raises(StreamCapacityExceededError):
        await bridge.publish(extra, "values", 1)
    assert await bridge.get_status(live) == StreamStatus.ACTIVE
    assert await bridge.get_status(newcomer) == StreamStatus.ACTIVE


@memory_only
@bounded()
async def test_waiting_subscribers_do_not_take_capacity(make_bridge: BridgeFactory) -> None:
    """Subscribing creates no stream, so it cannot use up max_active_streams."""
    bridge = await make_bridge(max_active_streams=1, stream_eviction_policy="reject")
    async with subscription(bridge, new_run()) as sub:
        assert await sub.__anext__() is HEARTBEAT_SENTINEL
        assert await bridge.publish(new_run(), "values", 1) == "1"


# --- the proofs ---------------------------------------------------------


@pytest.mark.parametrize("empty_reads", [1, 2, 3])
@pytest.mark.parametrize("stream", ["existing", "missing"])
@bounded()
async def test_event_published_between_two_reads_is_delivered(
    bridge: Any, empty_reads: int, stream: str
) -> None:
    """An event published while a subscriber sits between two reads is delivered.

    Deterministic: a heartbeat means a read came back empty and the subscriber
    is suspended before its next read; the publish happens right there.
    """
    run = new_run()
    cursor = None
    if stream == "existing":
        await fill(bridge, run, 1)
        cursor = "1"
    async with subscription(bridge, run, cursor) as sub:
        for _ in range(empty_reads):
            assert await sub.__anext__() is HEARTBEAT_SENTINEL
        sent = await bridge.publish(run, "values", {"sentinel": True})
        item = await nxt(sub)
        assert (item.id, item.data) == (sent, {"sentinel": True})


@pytest.mark.parametrize("yields", range(0, 40, 3))
@bounded()
async def test_event_published_at_any_scheduling_point_is_delivered(
    bridge: Any, yields: int
) -> None:
    """Whatever the subscriber task is doing when the publish happens, nothing is lost."""
    run = new_run()
    await fill(bridge, run, 1)
    async with subscription(bridge, run, "1") as sub:
        consumer = Consumer(sub)
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            for _ in range(yields):
                await anyio.lowlevel.checkpoint()
            await bridge.publish(run, "values", data_for(2))
            for _ in range(yields):
                await anyio.lowlevel.checkpoint()
            await bridge.publish_end(run)
    assert ids(consumer.items) == [2, 3]


@bounded(120)
async def test_100_concurrent_produce_then_subscribe_pairs_lose_nothing(bridge: Any) -> None:
    """100 concurrent "start producing, then subscribe" pairs: zero loss."""
    events = 20
    results: dict[str, list[Any]] = {}

    async def produce(run: str) -> None:
        for i in range(1, events + 1):
            await bridge.publish(run, "values", data_for(i))
            await anyio.lowlevel.checkpoint()
        await bridge.publish_end(run)

    async def subscribe(run: str) -> None:
        results[run] = await read_all(bridge, run)

    async def pair(run: str) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, run)
            await anyio.lowlevel.checkpoint()  # the producer starts first
            tg.start_soon(subscribe, run)

    runs = [new_run() for _ in range(100)]
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(pair, run)
    for run in runs:
        assert ids(results[run]) == list(range(1, events + 2)), run
        assert not gaps(results[run])
        assert [item.data for item in results[run][:-1]] == [
            data_for(i) for i in range(1, events + 1)
        ]


@bounded(180)
async def test_cut_after_every_k_and_resume_from_k(make_bridge: BridgeFactory) -> None:
    """For a 200-event run, cut the subscription after every k and resume from
    event k: the union is exactly 1..n, once each."""
    bridge = await make_bridge(max_events_per_stream=10_000)
    run = new_run()
    await fill(bridge, run, 200)
    n = int(await bridge.publish_end(run))
    assert n == 201
    for k in range(0, n):  # k == n (resume after the terminal) has its own test
        async with subscription(bridge, run) as sub:
            head = await take(sub, k)
        resumed = await read_all(bridge, run, str(k)) if k else await read_all(bridge, run)
        union = ids(head) + ids(resumed)
        assert union == list(range(1, n + 1)), k
        assert not gaps(head + resumed)


@pytest.mark.parametrize("chunk", [1, 7])
@bounded(120)
async def test_repeated_resume_while_producing_live(bridge: Any, chunk: int) -> None:
    """Cut and resume over and over while the producer runs: exactly 1..n, in order."""
    run = new_run()
    seen: list[Any] = []

    async def produce() -> None:
        for i in range(1, 201):
            await bridge.publish(run, "values", data_for(i))
            await anyio.lowlevel.checkpoint()
        await bridge.publish_end(run)

    async def consume() -> None:
        cursor: str | None = None
        while True:
            async with subscription(bridge, run, cursor) as sub:
                batch = await take(sub, chunk)
            seen.extend(batch)
            cursor = batch[-1].id
            if is_terminal(batch[-1]):
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        tg.start_soon(consume)
    assert ids(seen) == list(range(1, 202))
    assert not gaps(seen)
    assert all(item.data == data_for(int(item.id)) for item in seen[:-1])


# --- Redis-specific lines of the contract -------------------------------------


async def _raw_redis(backend_config: dict[str, Any]) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(backend_config["redis_url"], decode_responses=True)


async def _stream_keys(client: Any, run: str) -> list[str]:
    keys = [key async for key in client.scan_iter(match=f"*{run}*", count=1000)]
    return [key for key in keys if await client.type(key) == "stream"]


@redis_only
@bounded()
async def test_redis_keys_start_with_the_prefix_and_ids_are_0_seq(
    bridge: Any, backend_config: dict[str, Any]
) -> None:
    """Redis: every key starts with key_prefix; entry ids are 0-<seq>."""
    run = new_run()
    await fill(bridge, run, 3)
    await bridge.mark_awaiting_input(run)
    async with subscription(bridge, run) as sub:
        await take(sub, 3)
    await bridge.publish_end(run)
    client = await _raw_redis(backend_config)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{run}*", count=1000)]
        assert keys
        assert all(key.startswith(backend_config["key_prefix"]) for key in keys), keys
        (stream_key,) = await _stream_keys(client, run)
        entries = await client.xrange(stream_key)
        assert [entry_id for entry_id, _ in entries] == ["0-1", "0-2", "0-3", "0-4"]
    finally:
        await client.aclose()


@redis_only
@bounded()
async def test_redis_lost_key_is_reported_as_a_gap(
    bridge: Any, backend_config: dict[str, Any]
) -> None:
    """Redis: the producer keeps numbering after a lost key, so subscribers see the
    hole as a gap, never a silent skip."""
    run = new_run()
    await fill(bridge, run, 5)
    client = await _raw_redis(backend_config)
    try:
        async with subscription(bridge, run) as sub:
            head = await take(sub, 3)
            deleted = await _stream_keys(client, run)
            assert deleted
            await client.delete(*deleted)
            assert await bridge.publish(run, "values", data_for(6)) == "6"
            assert await bridge.publish(run, "values", data_for(7)) == "7"
            items = head + await take_until_id(sub, "7")
        check_no_silent_skip(items, run_id=run, cursor=None)
        for cursor in (None, "0", "2"):
            async with subscription(bridge, run, cursor) as sub:
                items = await take_until_id(sub, "7")
            gap = items[0]
            assert isinstance(gap, StreamGap), items[:2]
            assert (gap.run_id, gap.requested_event_id) == (run, cursor)
            assert (gap.earliest_available_event_id, gap.latest_available_event_id) == ("6", "7")
            assert ids(items[1:]) == [6, 7]
    finally:
        await client.aclose()


@redis_only
@bounded()
async def test_redis_second_writer_cannot_duplicate_ids(
    bridge: Any, make_bridge: BridgeFactory
) -> None:
    """Redis: a writer whose sequence is stale raises StaleWriterError; ids stay dense
    and unique whichever writer wins."""
    run = new_run()
    await fill(bridge, run, 3)
    other = await make_bridge()
    try:
        taken = await other.publish(run, "values", {"writer": "other"})
    except StaleWriterError:
        taken = None
    if taken is not None:
        assert taken == "4"
        with pytest.raises(StaleWriterError):
            await bridge.publish(run, "values", {"writer": "first"})
    else:
        assert await bridge.publish(run, "values", {"writer": "first"}) == "4"
    async with subscription(bridge, run) as sub:
        items = await take(sub, 4)
    assert ids(items) == [1, 2, 3, 4]


WRITE_COMMANDS = {"XADD", "EVALSHA", "EVAL", "EVALSHA_RO", "FCALL"}


def _flaky_client(redis_url: str, *, fail_write: int) -> Any:
    """A client whose ``fail_write``-th write reaches Redis and then "times out"."""
    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline
    from redis.exceptions import TimeoutError as RedisTimeoutError

    def is_write(args: tuple[Any, ...]) -> bool:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        return name.split(" ")[0].upper() in WRITE_COMMANDS

    class FlakyPipeline(Pipeline):
        owner: Any = None

        async def execute(self, raise_on_error: bool = True) -> list[Any]:
            writes = any(is_write(args) for args, _ in self.command_stack)
            result = await super().execute(raise_on_error)
            if writes and self.owner.trip():
                raise RedisTimeoutError("simulated: the write was applied, the reply was lost")
            return result

    class FlakyRedis(aioredis.Redis):
        writes = 0
        tripped = 0

        def trip(self) -> bool:
            self.writes += 1
            if self.writes == fail_write:
                self.tripped += 1
                return True
            return False

        def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
            pipe = FlakyPipeline(
                self.connection_pool, self.response_callbacks, transaction, shard_hint
            )
            pipe.owner = self
            return pipe

        async def execute_command(self, *args: Any, **options: Any) -> Any:
            result = await super().execute_command(*args, **options)
            if is_write(args) and self.trip():
                raise RedisTimeoutError("simulated: the write was applied, the reply was lost")
            return result

    return FlakyRedis.from_url(redis_url)


@redis_only
@pytest.mark.parametrize("fail_write", [1, 3])
@bounded()
async def test_redis_retried_write_after_a_timeout_leaves_no_duplicate(
    make_bridge: BridgeFactory, backend_config: dict[str, Any], fail_write: int
) -> None:
    """Redis: entries carry explicit ids derived from the sequence, so a retried
    write (after a timeout that hid a successful write) cannot duplicate."""
    client = _flaky_client(backend_config["redis_url"], fail_write=fail_write)
    bridge = None
    try:
        bridge = await make_bridge(client=client)
        run = new_run()
        returned = [await bridge.publish(run, "values", data_for(i)) for i in range(1, 5)]
        assert client.tripped == 1, "the simulated timeout never happened"
        assert returned == ["1", "2", "3", "4"]
        await bridge.publish_end(run)
        items = await read_all(bridge, run)
        assert [(item.id, item.data) for item in items[:-1]] == [
            (str(i), data_for(i)) for i in range(1, 5)
        ]
        assert ids(items) == [1, 2, 3, 4, 5]
    finally:
        if bridge is not None:  # the bridge does not own a client it was given
            await bridge.close()
        await client.aclose()


def _spy_client(redis_url: str) -> Any:
    """A client that records every command sent through ``execute_command``."""
    import redis.asyncio as aioredis

    class SpyRedis(aioredis.Redis):
        commands: list[tuple[Any, ...]]

        async def execute_command(self, *args: Any, **options: Any) -> Any:
            self.commands.append(args)
            return await super().execute_command(*args, **options)

    client = SpyRedis.from_url(redis_url)
    client.commands = []
    return client


@redis_only
@bounded()
async def test_redis_never_reads_from_dollar(
    make_bridge: BridgeFactory, backend_config: dict[str, Any]
) -> None:
    """Redis cursor discipline: never pass ``$`` to XREAD; always an explicit cursor."""
    client = _spy_client(backend_config["redis_url"])
    bridge = None
    try:
        bridge = await make_bridge(client=client)
        run = new_run()
        async with subscription(bridge, run) as early, subscription(bridge, run, "0") as zero:
            assert await early.__anext__() is HEARTBEAT_SENTINEL
            assert await zero.__anext__() is HEARTBEAT_SENTINEL
            await fill(bridge, run, 3)
            assert ids(await take(early, 3)) == [1, 2, 3]
            assert await early.__anext__() is HEARTBEAT_SENTINEL  # an empty read
            await fill(bridge, run, 1, first=4)
            assert ids(await take(early, 1)) == [4]
            assert ids(await take(zero, 4)) == [1, 2, 3, 4]
        await bridge.publish_end(run)
        assert ids(await read_all(bridge, run, "2")) == [3, 4, 5]
    finally:
        if bridge is not None:
            await bridge.close()
        await client.aclose()

    def name(args: tuple[Any, ...]) -> str:
        first = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        return first.split(" ")[0].upper()

    reads = [args for args in client.commands if name(args) in {"XREAD", "XREADGROUP"}]
    assert reads, "no XREAD went through the client; this test saw nothing"
    for args in reads:
        assert all(arg not in ("$", b"$") for arg in args[1:]), args


# --- latest_event_id: "live from now" ---------------------------------------


@pytest.mark.anyio
@bounded()
async def test_latest_event_id_tracks_the_newest_entry_and_subscribes_live_from_now(
    bridge: StreamBridge,
) -> None:
    run_id = new_run()
    assert await bridge.latest_event_id(run_id) is None
    assert not await bridge.stream_exists(run_id)
    for i in range(1, 4):
        await bridge.publish(run_id, "values", data_for(i))
    now = await bridge.latest_event_id(run_id)
    assert now == "3"
    async with subscription(bridge, run_id, now) as sub:
        await bridge.publish(run_id, "values", data_for(4))
        item = await nxt(sub)
        assert (item.id, item.data) == ("4", data_for(4))
        terminal_id = await bridge.publish_end(run_id)
        assert (await nxt(sub)).id == terminal_id
    assert await bridge.latest_event_id(run_id) == terminal_id == "5"
