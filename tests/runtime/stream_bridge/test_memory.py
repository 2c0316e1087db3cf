"""MemoryStreamBridge specifics: retention, eviction, housekeeping, stats, close.

The backend-independent contract lives in ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
import pkgutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson
import pytest

import runlane.runtime.stream_bridge as package
from runlane.runtime.stream_bridge import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    HEARTBEAT_SENTINEL,
    StreamEvent,
    StreamGap,
    StreamStatus,
)
from runlane.runtime.stream_bridge.exceptions import (
    BridgeClosedError,
    StreamCapacityExceededError,
    StreamTerminatedError,
)
from runlane.runtime.stream_bridge.memory import MemoryStreamBridge

pytestmark = pytest.mark.anyio

Item = StreamEvent | StreamGap


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock) -> Callable[..., MemoryStreamBridge]:
    def factory(**limits: Any) -> MemoryStreamBridge:
        return MemoryStreamBridge(clock=clock, **limits)

    return factory


async def settle(predicate: Callable[[], bool]) -> None:
    """Let other tasks run until ``predicate`` holds (scheduling only, no timers)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def drain(iterator: AsyncIterator[Item]) -> list[Item]:
    with anyio.fail_after(5):
        return [item async for item in iterator]


async def take(iterator: AsyncIterator[Item], count: int) -> list[Item]:
    with anyio.fail_after(5):
        return [await anext(iterator) for _ in range(count)]


def ids(items: list[Item]) -> list[str]:
    return [item.id for item in items if isinstance(item, StreamEvent) and item.id]


def parked(bridge: MemoryStreamBridge, run_id: str) -> Callable[[], bool]:
    return lambda: bridge._streams[run_id].wakeup is not None


# --- exports and errors ----------------------------------------------------------


def test_package_exports_exactly_the_base_names() -> None:
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    public = {name for name in dir(package) if not name.startswith("_")}
    assert set(package.__all__) == public - submodules
    assert "MemoryStreamBridge" not in package.__all__


def test_errors_default_to_their_docstring() -> None:
    assert str(BridgeClosedError()).startswith("The stream bridge is closed")
    assert isinstance(StreamTerminatedError(), Exception)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_events_per_stream": 0},
        {"max_bytes_per_stream": -1},
        {"max_active_streams": 0},
        {"stream_eviction_policy": "fifo"},
        {"orphan_timeout": 0},
        {"cleanup_interval": -5.0},
    ],
)
def test_invalid_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(limits))):
        MemoryStreamBridge(**limits)


# --- encoding and fan-out ----------------------------------------------------------


async def test_events_are_encoded_once_and_shared_by_every_subscriber(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", {"n": (1, 2)})
    await bridge.publish_end("r", {"status": "success"})
    first = await drain(bridge.subscribe("r"))
    second = await drain(bridge.subscribe("r", last_event_id="0"))
    assert ids(first) == ["1", "2"]
    assert all(a is b for a, b in zip(first, second, strict=True))
    event = first[0]
    assert isinstance(event, StreamEvent)
    assert event.data == {"n": [1, 2]}
    assert event.payload == orjson.dumps({"n": [1, 2]})
    assert first[1] == StreamEvent("2", "end", {"status": "success"})


async def test_data_that_is_not_json_writes_nothing(make: Any) -> None:
    bridge = make()
    with pytest.raises(ValueError, match="JSON"):
        await bridge.publish("r", "values", {"x": object()})
    assert not await bridge.stream_exists("r")
    assert await bridge.publish("r", "values", 1) == "1"
    with pytest.raises(TypeError, match="set"):
        await bridge.publish("r", "values", {1j})
    with pytest.raises(ValueError, match="JSON"):
        await bridge.publish_terminal("r", StreamStatus.ERRORED, object())
    assert await bridge.get_status("r") is StreamStatus.ACTIVE
    assert await bridge.publish("r", "values", 2) == "2"


async def test_event_names_must_fit_an_sse_field(make: Any) -> None:
    bridge = make()
    for name in ("", "two\nlines"):
        with pytest.raises(ValueError, match="event name"):
            await bridge.publish("r", name, None)
    assert not await bridge.stream_exists("r")


async def test_a_data_event_named_error_is_not_terminal(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "error", {"error": "Boom"})
    await bridge.publish_terminal("r", StreamStatus.ERRORED, {"status": "error"})
    items = await drain(bridge.subscribe("r"))
    assert [(i.event, i.terminal) for i in items if isinstance(i, StreamEvent)] == [
        ("error", False),
        ("error", True),
    ]


# --- retention -----------------------------------------------------------------------


async def test_count_limit_trims_oldest_and_reports_the_gap(make: Any) -> None:
    bridge = make(max_events_per_stream=3)
    for n in range(5):
        await bridge.publish("r", "values", n)
    await bridge.publish_end("r")
    items = await drain(bridge.subscribe("r"))
    assert items[0] == StreamGap("r", None, "3", "6")
    assert ids(items[1:]) == ["3", "4", "5", "6"]
    assert await drain(bridge.subscribe("r", last_event_id="3")) == items[2:]
    resumed = await drain(bridge.subscribe("r", last_event_id="1"))
    assert resumed[0] == StreamGap("r", "1", "3", "6")


async def test_byte_limit_counts_payload_bytes(make: Any) -> None:
    bridge = make(max_bytes_per_stream=25)
    for _ in range(3):
        await bridge.publish("r", "values", "x" * 8)  # 10 payload bytes each
    stats = bridge.get_stats()
    assert (stats["total_events"], stats["total_bytes"], stats["trimmed_events"]) == (2, 20, 1)
    await bridge.publish_end("r", "y" * 100)  # the terminal entry is never trimmed
    items = await drain(bridge.subscribe("r"))
    assert items[0] == StreamGap("r", None, "2", "4")
    assert ids(items[1:]) == ["2", "3", "4"]


async def test_an_event_larger_than_the_byte_limit_is_a_gap_not_a_skip(make: Any) -> None:
    bridge = make(max_bytes_per_stream=10)
    await bridge.publish("r", "values", "z" * 50)
    iterator = bridge.subscribe("r")
    assert await take(iterator, 1) == [StreamGap("r", None, None, "1")]
    await bridge.publish_end("r")
    assert ids(await drain(iterator)) == ["2"]


async def test_a_lagging_subscriber_gets_a_gap_then_the_oldest_retained(make: Any) -> None:
    bridge = make(max_events_per_stream=2)
    await bridge.publish("r", "values", 1)
    iterator = bridge.subscribe("r")
    assert ids(await take(iterator, 1)) == ["1"]
    for n in range(2, 7):
        await bridge.publish("r", "values", n)
    await bridge.publish_end("r")
    rest = await drain(iterator)
    assert rest[0] == StreamGap("r", "1", "5", "7")
    assert ids(rest[1:]) == ["5", "6", "7"]


# --- eviction ------------------------------------------------------------------------


async def test_lru_evicts_the_least_recently_used_terminal_stream(
    make: Any, clock: FakeClock
) -> None:
    bridge = make(max_active_streams=3)
    await bridge.publish_end("a")
    await bridge.publish_end("b")
    await bridge.publish("live", "values", 1)
    reader = bridge.subscribe("a")  # attaching to "a" makes "b" the least recently used
    assert ids(await take(reader, 1)) == ["1"]
    await bridge.publish("c", "values", 1)
    assert [await bridge.stream_exists(r) for r in ("a", "b", "live", "c")] == [
        True, False, True, True,
    ]


async def test_lru_ends_readers_of_the_evicted_stream(make: Any) -> None:
    bridge = make(max_active_streams=1)
    await bridge.publish("a", "values", 1)
    await bridge.publish_terminal("a", StreamStatus.CANCELLED)
    reader = bridge.subscribe("a", last_event_id="0")
    assert await take(reader, 1) == [StreamEvent("1", "values", 1)]
    await bridge.publish("b", "values", 1)
    assert await drain(reader) == [END_SENTINEL]


async def test_lru_never_ends_a_live_stream_to_make_room(make: Any) -> None:
    bridge = make(max_active_streams=2)
    await bridge.publish("a", "values", 1)
    await bridge.publish("b", "values", 1)
    with pytest.raises(StreamCapacityExceededError, match="max_active_streams=2"):
        await bridge.publish("c", "values", 1)
    with pytest.raises(StreamCapacityExceededError):
        await bridge.cancel("c")
    assert not await bridge.stream_exists("c")
    assert await bridge.publish("a", "values", 2) == "2"  # existing streams still take writes


async def test_reject_refuses_a_new_stream_even_when_one_could_be_evicted(make: Any) -> None:
    bridge = make(max_active_streams=1, stream_eviction_policy="reject")
    await bridge.publish_end("a")
    with pytest.raises(StreamCapacityExceededError):
        await bridge.publish("b", "values", 1)
    assert await bridge.stream_exists("a")
    await bridge.cleanup("a")
    assert await bridge.publish("b", "values", 1) == "1"


# --- housekeeping ----------------------------------------------------------------


async def test_an_idle_active_stream_gets_dead_letter_yes_no(make: Any, clock: FakeClock) -> None:
    bridge = make(active_no_publish_timeout=10)
    await bridge.publish("r", "values", 1)
    clock.advance(5)
    await bridge.publish("r", "values", 2)
    clock.advance(9.5)
    await bridge.sweep()
    assert await bridge.get_status("r") is StreamStatus.ACTIVE
    clock.advance(0.5)
    await bridge.sweep()
    assert await bridge.get_status("r") is StreamStatus.ERRORED
    last = (await drain(bridge.subscribe("r")))[-1]
    assert last == StreamEvent("3", "dead_letter", {"reason": "no_publish_timeout"})
    with pytest.raises(StreamTerminatedError):
        await bridge.publish("r", "values", 3)


async def test_awaiting_input_extends_the_timeout_until_the_next_publish(
    make: Any, clock: FakeClock
) -> None:
    bridge = make(active_no_publish_timeout=10, hitl_extended_timeout=100)
    await bridge.publish("r", "values", 1)
    clock.advance(8)
    await bridge.mark_awaiting_input("r")
    clock.advance(99)  # 107 s after the publish, 99 s after the mark
    await bridge.sweep()
    assert await bridge.get_status("r") is StreamStatus.ACTIVE
    await bridge.publish("r", "values", 2)  # clears the mark
    clock.advance(10)
    await bridge.sweep()
    last = (await drain(bridge.subscribe("r", last_event_id="2")))[-1]
    assert last == StreamEvent("3", "dead_letter", {"reason": "no_publish_timeout"})

    await bridge.publish("h", "values", 1)
    await bridge.mark_awaiting_input("h")
    clock.advance(100)
    await bridge.sweep()
    last = (await drain(bridge.subscribe("h")))[-1]
    assert last == StreamEvent("2", "dead_letter", {"reason": "awaiting_input_timeout"})


async def test_mark_awaiting_input_never_creates_a_stream(make: Any) -> None:
    bridge = make()
    await bridge.mark_awaiting_input("nobody")
    assert not await bridge.stream_exists("nobody")


async def test_an_active_stream_past_max_age_gets_dead_letter(make: Any, clock: FakeClock) -> None:
    bridge = make(max_stream_age=50, active_no_publish_timeout=10)
    await bridge.publish("r", "values", 0)
    for n in range(1, 6):
        clock.advance(9)
        await bridge.publish("r", "values", n)
        await bridge.sweep()
    assert await bridge.get_status("r") is StreamStatus.ACTIVE  # 45 s old, never idle
    clock.advance(5)
    await bridge.sweep()
    terminal = (await drain(bridge.subscribe("r", last_event_id="6")))[0]
    assert terminal == StreamEvent("7", "dead_letter", {"reason": "max_stream_age"})


async def test_a_terminal_stream_without_readers_is_removed_after_orphan_timeout(
    make: Any, clock: FakeClock
) -> None:
    bridge = make(orphan_timeout=10, terminal_retention_ttl=1000)
    await bridge.publish_end("r")
    clock.advance(9)
    await bridge.sweep()
    assert await bridge.stream_exists("r")
    assert ids(await drain(bridge.subscribe("r"))) == ["1"]  # resets the orphan clock
    clock.advance(9)
    await bridge.sweep()
    assert await bridge.stream_exists("r")
    clock.advance(1)
    await bridge.sweep()
    assert not await bridge.stream_exists("r")


async def test_an_attached_reader_keeps_a_terminal_stream_until_it_leaves(
    make: Any, clock: FakeClock
) -> None:
    bridge = make(orphan_timeout=10, terminal_retention_ttl=1000)
    await bridge.publish("r", "values", 1)
    reader = bridge.subscribe("r")
    assert ids(await take(reader, 1)) == ["1"]
    await bridge.publish_end("r")
    clock.advance(50)
    await bridge.sweep()
    assert await bridge.stream_exists("r")
    assert ids(await drain(reader)) == ["2"]  # the reader detaches at its terminal entry
    await bridge.sweep()
    assert await bridge.stream_exists("r")  # orphan clock restarted at the detach
    clock.advance(10)
    await bridge.sweep()
    assert not await bridge.stream_exists("r")


async def test_terminal_retention_ttl_applies_when_shorter_than_orphan_timeout(
    make: Any, clock: FakeClock
) -> None:
    bridge = make(orphan_timeout=100, terminal_retention_ttl=30)
    await bridge.publish_end("r")
    clock.advance(20)
    await drain(bridge.subscribe("r"))
    clock.advance(9)
    await bridge.sweep()
    assert await bridge.stream_exists("r")
    clock.advance(1)
    await bridge.sweep()
    assert not await bridge.stream_exists("r")


async def test_start_runs_the_sweep_every_cleanup_interval(make: Any, clock: FakeClock) -> None:
    async with make(active_no_publish_timeout=1, cleanup_interval=0.01) as bridge:
        await bridge.publish("r", "values", 1)
        reader = bridge.subscribe("r", last_event_id="1", heartbeat_interval=60)
        clock.advance(1)
        assert await drain(reader) == [
            StreamEvent("2", "dead_letter", {"reason": "no_publish_timeout"})
        ]


async def test_ten_thousand_streams_leave_nothing_behind(make: Any, clock: FakeClock) -> None:
    bridge = make(max_active_streams=10_000, orphan_timeout=1)
    for n in range(10_000):
        await bridge.publish(f"r{n}", "values", n)
        await bridge.publish_end(f"r{n}")
    assert bridge.get_stats()["total_events"] == 20_000
    waiter = bridge.subscribe("never")
    assert await take(waiter, 0) == []
    clock.advance(1)
    await bridge.sweep()
    stats = bridge.get_stats()
    assert {key: stats[key] for key in ("total_streams", "total_events", "total_bytes")} == {
        "total_streams": 0, "total_events": 0, "total_bytes": 0,
    }
    assert (bridge._streams, bridge._ended, bridge._awaited) == ({}, {}, {})


# --- subscribing ---------------------------------------------------------------------


async def test_subscribing_waits_for_the_stream_without_creating_it(make: Any) -> None:
    bridge = make()
    reader = bridge.subscribe("r", heartbeat_interval=0.01)
    assert await take(reader, 2) == [HEARTBEAT_SENTINEL, HEARTBEAT_SENTINEL]
    assert not await bridge.stream_exists("r")
    assert bridge.get_stats()["waiting_subscribers"] == 1
    await bridge.publish("r", "values", 1)
    await bridge.publish_end("r")
    assert ids(await drain(reader)) == ["1", "2"]
    assert bridge._awaited == {}


async def test_a_cursor_is_checked_when_the_awaited_stream_appears(make: Any) -> None:
    bridge = make()
    reader = bridge.subscribe("r", last_event_id="5")
    pending = asyncio.create_task(anext(reader))
    await settle(lambda: bool(bridge._awaited))
    await bridge.publish("r", "values", 1)
    with pytest.raises(ValueError, match="beyond"):
        await pending


async def test_bad_arguments_raise_at_the_first_step(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 1)
    for cursor in ("01", "-1", "x", "2"):
        with pytest.raises(ValueError, match="cursor"):
            await anext(bridge.subscribe("r", last_event_id=cursor))
    with pytest.raises(ValueError, match="heartbeat_interval"):
        await anext(bridge.subscribe("r", heartbeat_interval=0))
    with pytest.raises(ValueError, match="terminal kind"):
        await bridge.publish_terminal("r", StreamStatus.ACTIVE)


async def test_an_idle_attached_reader_gets_heartbeats_until_the_next_event(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 1)
    reader = bridge.subscribe("r", last_event_id="1", heartbeat_interval=0.01)
    assert await take(reader, 2) == [HEARTBEAT_SENTINEL, HEARTBEAT_SENTINEL]
    await bridge.publish("r", "values", 2)
    assert await take(reader, 1) == [StreamEvent("2", "values", 2)]


async def test_resuming_after_every_position_yields_exactly_the_rest(make: Any) -> None:
    bridge = make(max_events_per_stream=500)
    for n in range(200):
        await bridge.publish("r", "values", n)
    await bridge.publish_end("r")
    expected = [str(n) for n in range(1, 202)]
    for k in range(202):
        assert ids(await drain(bridge.subscribe("r", last_event_id=str(k)))) == expected[k:]


async def test_cleanup_after_close_is_a_no_op(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 1)
    delayed = asyncio.create_task(bridge.cleanup("r", delay=0.01))
    await asyncio.sleep(0)  # let the cleanup start its delay
    await bridge.close()
    with anyio.fail_after(5):
        await delayed


async def test_a_parked_reader_is_woken_by_each_publish(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 0)
    readers = [bridge.subscribe("r", last_event_id="1", heartbeat_interval=60) for _ in range(3)]
    for expected in ("2", "3"):
        steps = [asyncio.create_task(take(reader, 1)) for reader in readers]
        await settle(parked(bridge, "r"))
        await bridge.publish("r", "values", expected)
        assert [ids(await step) for step in steps] == [[expected]] * 3
    await bridge.publish_end("r")
    assert [ids(await drain(reader)) for reader in readers] == [["4"]] * 3
    assert bridge.get_stats()["total_subscribers"] == 0


async def test_an_abandoned_reader_detaches(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 1)
    reader = bridge.subscribe("r")
    await take(reader, 1)
    assert bridge.get_stats()["total_subscribers"] == 1
    await reader.aclose()
    assert bridge.get_stats()["total_subscribers"] == 0


async def test_cleanup_ends_attached_readers_with_end_sentinel(make: Any) -> None:
    bridge = make()
    await bridge.publish("r", "values", 1)
    reader = bridge.subscribe("r", heartbeat_interval=60)
    task = asyncio.create_task(drain(reader))
    await settle(parked(bridge, "r"))
    await bridge.cleanup("r")
    assert ids(await task) == ["1"]
    assert task.result()[-1] is END_SENTINEL
    assert not await bridge.stream_exists("r")


async def test_terminal_calls_are_idempotent(make: Any) -> None:
    bridge = make()
    assert await bridge.cancel("r") == "1"
    assert await bridge.publish_end("r") == "1"
    assert await bridge.publish_terminal("r", StreamStatus.ERRORED, {"x": 1}) == "1"
    assert await bridge.get_status("r") is StreamStatus.CANCELLED
    assert await drain(bridge.subscribe("r")) == [StreamEvent("1", "cancel", None)]


# --- stats and close -----------------------------------------------------------------


async def test_get_stats_counts_streams_events_and_readers(make: Any) -> None:
    bridge = make()
    await bridge.publish("a", "values", "ab")
    await bridge.publish("b", "values", 1)
    await bridge.publish_end("b")
    reader = bridge.subscribe("a")
    await take(reader, 1)
    assert bridge.get_stats() == {
        "total_streams": 2,
        "active_streams": 1,
        "terminal_streams": 1,
        "total_events": 3,
        "total_bytes": len(b'"ab"') + len(b"1") + len(b"null"),
        "total_subscribers": 1,
        "waiting_subscribers": 0,
        "trimmed_events": 0,
        "closed": False,
    }


async def test_close_cancels_every_reader_and_later_calls_raise(make: Any) -> None:
    bridge = make()
    await bridge.start()
    await bridge.publish("r", "values", 1)
    attached = asyncio.create_task(drain(bridge.subscribe("r", heartbeat_interval=60)))
    waiting = asyncio.create_task(drain(bridge.subscribe("other", heartbeat_interval=60)))
    await settle(lambda: parked(bridge, "r")() and "other" in bridge._awaited)
    await bridge.close()
    assert ids(await attached) == ["1"]
    assert attached.result()[-1] is CANCELLED_SENTINEL
    assert await waiting == [CANCELLED_SENTINEL]
    await bridge.close()
    assert bridge.get_stats()["closed"] is True
    assert bridge.get_stats()["total_streams"] == 0
    for call in (
        bridge.publish("r", "values", 2),
        bridge.publish_end("r"),
        bridge.stream_exists("r"),
        bridge.get_status("r"),
        bridge.sweep(),
        bridge.start(),
    ):
        with pytest.raises(BridgeClosedError):
            await call
    with pytest.raises(BridgeClosedError):
        await anext(bridge.subscribe("r"))


async def test_no_sentinel_follows_a_terminal_entry(make: Any) -> None:
    bridge = make()
    await bridge.publish_end("r")
    reader = bridge.subscribe("r")
    assert ids(await take(reader, 1)) == ["1"]
    await bridge.close()
    with pytest.raises(StopAsyncIteration):
        await anext(reader)
