"""The assistant read cache: reused for its TTL, forgotten on every write through the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import create_engine
from runlane.runtime.assistants import SqlAssistantStore
from runlane.runtime.assistants.cache import AssistantCache, json_copy

pytestmark = pytest.mark.anyio

FIELDS: dict[str, Any] = {
    "graph_id": "agent",
    "config": {"configurable": {"model": "a"}},
    "context": {},
    "metadata": {"tags": ["x"]},
    "name": "one",
    "description": None,
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    # Resolved synchronously: the URL fixtures run their own event loops.
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def count_selects(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "assistants" in statement:
            seen.append(statement)

    return seen


def store_with_clock(engine: AsyncEngine, clock: Clock, ttl: float = 1.0) -> SqlAssistantStore:
    store = SqlAssistantStore(engine, cache_ttl=ttl)
    store._cache = AssistantCache(ttl, clock=clock)
    return store


async def test_a_read_is_reused_within_the_ttl_then_read_again(engine: AsyncEngine) -> None:
    clock = Clock()
    store = store_with_clock(engine, clock)
    await store.create(assistant_id="a", **FIELDS)
    selects = count_selects(engine)
    first = await store.get("a")
    assert await store.get("a") == first
    assert len(selects) == 1
    clock.now += 1.0
    assert await store.get("a") == first
    assert len(selects) == 2


async def test_every_write_through_the_store_is_seen_at_once(engine: AsyncEngine) -> None:
    store = SqlAssistantStore(engine, cache_ttl=60.0)
    await store.create(assistant_id="a", **FIELDS)
    assert (await store.get("a") or {})["name"] == "one"
    await store.update("a", name="two")
    assert (await store.get("a") or {})["name"] == "two"
    await store.set_latest("a", 1)
    assert (await store.get("a") or {})["name"] == "one"
    await store.put({"assistant_id": "a", **FIELDS, "name": "three"})
    assert (await store.get("a") or {})["name"] == "three"
    assert await store.delete("a")
    assert await store.get("a") is None
    await store.create(assistant_id="a", **{**FIELDS, "name": "four"})
    assert (await store.get("a") or {})["name"] == "four"


async def test_another_process_write_is_seen_after_the_ttl(engine: AsyncEngine) -> None:
    clock = Clock()
    here = store_with_clock(engine, clock)
    there = SqlAssistantStore(engine, cache_ttl=0)  # another worker on the same database
    await there.create(assistant_id="a", **FIELDS)
    assert (await here.get("a") or {})["name"] == "one"
    await there.update("a", name="two")
    clock.now += 0.5
    assert (await here.get("a") or {})["name"] == "one"  # stale for at most the TTL
    clock.now += 0.5
    assert (await here.get("a") or {})["name"] == "two"


async def test_a_missing_assistant_is_not_cached(engine: AsyncEngine) -> None:
    here = SqlAssistantStore(engine, cache_ttl=60.0)
    there = SqlAssistantStore(engine, cache_ttl=0)
    assert await here.get("a") is None
    await there.create(assistant_id="a", **FIELDS)
    assert await here.get("a") is not None


async def test_callers_cannot_change_the_cached_value(engine: AsyncEngine) -> None:
    store = SqlAssistantStore(engine, cache_ttl=60.0)
    await store.create(assistant_id="a", **FIELDS)
    got = await store.get("a")
    assert got is not None
    got["config"]["configurable"]["model"] = "changed"
    got["metadata"]["tags"].append("y")
    again = await store.get("a")
    assert again is not None
    assert again["config"] == {"configurable": {"model": "a"}}
    assert again["metadata"] == {"tags": ["x"]}
    again["name"] = "changed"
    assert (await store.get("a") or {})["name"] == "one"


async def test_ttl_zero_reads_every_time(engine: AsyncEngine) -> None:
    store = SqlAssistantStore(engine, cache_ttl=0)
    await store.create(assistant_id="a", **FIELDS)
    selects = count_selects(engine)
    await store.get("a")
    await store.get("a")
    assert len(selects) == 2


async def test_a_read_overlapping_a_write_is_not_cached(engine: AsyncEngine) -> None:
    store = SqlAssistantStore(engine, cache_ttl=60.0)
    await store.create(assistant_id="a", **FIELDS)
    read_started = asyncio.Event()
    release = asyncio.Event()
    original = store._get

    async def slow_get(conn: Any, assistant_id: str) -> dict[str, Any] | None:
        found = await original(conn, assistant_id)
        read_started.set()
        await release.wait()
        return found

    store._get = slow_get  # type: ignore[method-assign]
    reader = asyncio.create_task(store.get("a"))
    await read_started.wait()
    store._get = original  # type: ignore[method-assign]
    await store.update("a", name="two")  # commits while the read holds the old row
    release.set()
    assert (await reader or {})["name"] == "one"  # what the read saw
    assert (await store.get("a") or {})["name"] == "two"  # but it was not cached


def test_the_cache_is_bounded_and_expires() -> None:
    clock = Clock()
    cache = AssistantCache(1.0, max_entries=2, clock=clock)
    for name in ("a", "b", "c"):
        cache.fill(name, {"assistant_id": name}, cache.ticket())
    assert cache.get("a") is None  # the oldest made room
    assert cache.get("c") == {"assistant_id": "c"}
    clock.now += 1.0
    assert cache.get("b") is None
    assert cache.get("c") is None


def test_a_write_under_way_blocks_fills_and_drops_only_its_id() -> None:
    cache = AssistantCache(10.0)
    cache.fill("a", {"v": 1}, cache.ticket())
    cache.fill("b", {"v": 1}, cache.ticket())
    ticket = cache.ticket()
    cache.write_began()
    cache.fill("c", {"v": 1}, cache.ticket())  # during the write
    cache.write_ended("a")
    cache.fill("d", {"v": 1}, ticket)  # began before the write
    assert cache.get("a") is None
    assert cache.get("b") == {"v": 1}
    assert cache.get("c") is None
    assert cache.get("d") is None


def test_json_copy_is_deep() -> None:
    value = {"a": [{"b": 1}], "c": "s"}
    copied = json_copy(value)
    assert copied == value
    assert copied["a"] is not value["a"]
    assert copied["a"][0] is not value["a"][0]
