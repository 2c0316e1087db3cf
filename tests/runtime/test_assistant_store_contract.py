"""One contract, three stores: every AssistantStore guarantee on memory, SQLite and Postgres.

Each test runs against ``MemoryAssistantStore``, ``SqlAssistantStore`` on a
fresh SQLite file and ``SqlAssistantStore`` on a fresh Postgres database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runlane.db.engine import create_engine
from runlane.exceptions import AssistantExistsError, InvalidInputError, InvalidPayloadError
from runlane.runtime.assistants import ASSISTANT_FIELDS, VERSION_FIELDS, AssistantStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved synchronously: the URL fixtures run their own event loops.
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(backend_url: str | None) -> AsyncIterator[AssistantStore]:
    if backend_url is None:
        from runlane.runtime.assistants import MemoryAssistantStore

        yield MemoryAssistantStore()
        return
    from runlane.runtime.assistants import SqlAssistantStore

    engine = create_engine(backend_url)
    try:
        yield SqlAssistantStore(engine)
    finally:
        await engine.dispose()


def instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"timestamp not in UTC: {value!r}"
    return parsed


async def make(
    store: AssistantStore, assistant_id: str | None = "a-1", **fields: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "graph_id": "agent",
        "config": {},
        "context": {},
        "metadata": {},
        "name": None,
        "description": None,
    }
    values.update(fields)
    return await store.create(assistant_id=assistant_id, **values)


async def version_numbers(store: AssistantStore, assistant_id: str, **kwargs: Any) -> list[int]:
    return [v["version"] for v in await store.versions(assistant_id, limit=100, **kwargs)]


def default_of(graph_id: str, **changes: Any) -> dict[str, Any]:
    """Shaped like ``runlane.graphs.assistants.default_assistant`` (datetimes included)."""
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    assistant = {
        "assistant_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, graph_id)),
        "graph_id": graph_id,
        "config": {},
        "context": {},
        "created_at": stamp,
        "updated_at": stamp,
        "metadata": {"created_by": "system"},
        "version": 1,
        "name": graph_id,
        "description": None,
    }
    assistant.update(changes)
    return assistant


# --- create, get, delete --------------------------------------------------------


async def test_create_writes_version_one_that_get_and_versions_read(store: AssistantStore) -> None:
    created = await make(
        store,
        graph_id="agent",
        config={"configurable": {"model": "x"}, "tags": ["t"]},
        context={"user": "é", "n": 1.5},
        metadata={"team": {"id": 7}},
        name="Helper",
        description="Answers questions",
    )

    assert tuple(created) == ASSISTANT_FIELDS
    assert created["assistant_id"] == "a-1"
    assert created["version"] == 1
    assert created["config"] == {"configurable": {"model": "x"}, "tags": ["t"]}
    assert created["context"] == {"user": "é", "n": 1.5}
    assert created["metadata"] == {"team": {"id": 7}}
    assert (created["name"], created["description"]) == ("Helper", "Answers questions")
    assert instant(created["created_at"]) == instant(created["updated_at"])
    assert await store.get("a-1") == created
    [version] = await store.versions("a-1")
    assert tuple(version) == VERSION_FIELDS
    assert version == {name: created[name] for name in VERSION_FIELDS}


async def test_create_without_an_id_assigns_a_uuid(store: AssistantStore) -> None:
    first = await make(store, None)
    second = await make(store, None)

    assert str(uuid.UUID(first["assistant_id"])) == first["assistant_id"]
    assert first["assistant_id"] != second["assistant_id"]
    assert await store.get(first["assistant_id"]) == first


async def test_create_an_existing_id_raises_and_changes_nothing(store: AssistantStore) -> None:
    original = await make(store, metadata={"v": 1})

    with pytest.raises(AssistantExistsError):
        await make(store, metadata={"v": 2})

    assert await store.get("a-1") == original
    assert await version_numbers(store, "a-1") == [1]


async def test_create_do_nothing_returns_the_existing_assistant(store: AssistantStore) -> None:
    original = await make(store, metadata={"v": 1})

    again = await make(store, metadata={"v": 2}, if_exists="do_nothing")

    assert again == original
    assert await version_numbers(store, "a-1") == [1]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"graph_id": ""}, InvalidInputError),
        ({"graph_id": None}, InvalidInputError),
        ({"graph_id": "g" * 256}, InvalidInputError),
        ({"name": 5}, InvalidInputError),
        ({"config": {"bad": object()}}, InvalidPayloadError),
        ({"context": {"bad": {1, 2}}}, InvalidPayloadError),
        ({"metadata": {"bad": b"x"}}, InvalidPayloadError),
        ({"metadata": ["not", "an object"]}, InvalidPayloadError),
    ],
)
async def test_create_refuses_bad_fields_and_writes_nothing(
    store: AssistantStore, fields: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await make(store, **fields)

    assert await store.get("a-1") is None
    assert await store.count() == 0


@pytest.mark.parametrize("bad_id", ["", "x" * 129, 12])
async def test_create_refuses_a_malformed_id(store: AssistantStore, bad_id: Any) -> None:
    with pytest.raises(InvalidInputError):
        await make(store, bad_id)
    assert await store.count() == 0


async def test_get_of_a_missing_assistant_returns_none(store: AssistantStore) -> None:
    assert await store.get("nope") is None
    assert await store.versions("nope") == []


async def test_delete_removes_the_assistant_and_its_versions(store: AssistantStore) -> None:
    await make(store, metadata={"v": 1})
    await store.update("a-1", metadata={"v": 2})
    await make(store, "a-2")

    assert await store.delete("a-1") is True
    assert await store.delete("a-1") is False
    assert await store.get("a-1") is None
    assert await store.versions("a-1") == []
    assert await store.get("a-2") is not None

    recreated = await make(store, metadata={"v": 3})
    assert recreated["version"] == 1
    assert await version_numbers(store, "a-1") == [1]


# --- update, versions, set_latest -------------------------------------------------


async def test_update_writes_a_new_version_and_merges_metadata(store: AssistantStore) -> None:
    created = await make(
        store, config={"c": 1}, context={"x": 1}, metadata={"a": 1, "b": {"x": 1}}, name="one"
    )

    updated = await store.update(
        "a-1", config={"c": 2}, metadata={"b": {"y": 2}, "c": None}, description="new"
    )

    assert updated is not None
    assert updated["version"] == 2
    assert updated["config"] == {"c": 2}
    assert updated["context"] == {"x": 1}
    assert updated["metadata"] == {"a": 1, "b": {"y": 2}, "c": None}
    assert (updated["name"], updated["description"]) == ("one", "new")
    assert updated["graph_id"] == "agent"
    assert updated["created_at"] == created["created_at"]
    assert instant(updated["updated_at"]) >= instant(created["updated_at"])
    assert await store.get("a-1") == updated
    newest, oldest = await store.versions("a-1")
    assert newest == {name: updated[name] for name in VERSION_FIELDS if name != "created_at"} | {
        "created_at": newest["created_at"]
    }
    assert (newest["version"], oldest["version"]) == (2, 1)
    assert oldest["config"] == {"c": 1}
    assert oldest["metadata"] == {"a": 1, "b": {"x": 1}}


async def test_update_with_nothing_given_still_writes_a_version(store: AssistantStore) -> None:
    created = await make(store, metadata={"a": 1})

    updated = await store.update("a-1")

    assert updated is not None
    assert updated["version"] == 2
    assert {k: v for k, v in updated.items() if k not in ("version", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("version", "updated_at")
    }


async def test_update_of_a_missing_assistant_returns_none(store: AssistantStore) -> None:
    assert await store.update("nope", metadata={"a": 1}) is None
    assert await store.get("nope") is None


async def test_a_bad_update_writes_nothing(store: AssistantStore) -> None:
    original = await make(store)

    with pytest.raises(InvalidPayloadError):
        await store.update("a-1", config={"bad": object()})
    with pytest.raises(InvalidInputError):
        await store.update("a-1", graph_id="")
    with pytest.raises(InvalidPayloadError):
        await store.update("nope", metadata={"bad": {1}})

    assert await store.get("a-1") == original
    assert await version_numbers(store, "a-1") == [1]


async def test_set_latest_makes_an_old_version_current(store: AssistantStore) -> None:
    await make(store, config={"v": 1}, metadata={"m": 1}, name="first")
    await store.update("a-1", config={"v": 2}, metadata={"m": 2}, name="second")

    current = await store.set_latest("a-1", 1)

    assert current is not None
    assert current["version"] == 1
    assert (current["config"], current["metadata"], current["name"]) == (
        {"v": 1},
        {"m": 1},
        "first",
    )
    assert await store.get("a-1") == current
    assert await version_numbers(store, "a-1") == [2, 1]

    # The next update builds on the current version and numbers after the highest.
    after = await store.update("a-1", context={"k": 1})
    assert after is not None
    assert after["version"] == 3
    assert (after["config"], after["name"], after["context"]) == ({"v": 1}, "first", {"k": 1})


async def test_set_latest_of_a_missing_version_or_assistant_returns_none(
    store: AssistantStore,
) -> None:
    original = await make(store)

    assert await store.set_latest("a-1", 2) is None
    assert await store.set_latest("nope", 1) is None
    assert await store.get("a-1") == original
    for bad in (0, -1, True, "1"):
        with pytest.raises(InvalidInputError):
            await store.set_latest("a-1", bad)  # type: ignore[arg-type]


async def test_versions_filter_by_metadata_and_page(store: AssistantStore) -> None:
    await make(store, metadata={"stage": "draft", "n": 1})
    for n in range(2, 6):
        stage = "live" if n % 2 else "draft"
        await store.update("a-1", metadata={"stage": stage, "n": n})

    assert await version_numbers(store, "a-1") == [5, 4, 3, 2, 1]
    assert await version_numbers(store, "a-1", metadata={"stage": "live"}) == [5, 3]
    assert await version_numbers(store, "a-1", metadata={"stage": "draft", "n": 2}) == [2]
    pages = [
        [v["version"] for v in await store.versions("a-1", limit=2, offset=offset)]
        for offset in (0, 2, 4)
    ]
    assert pages == [[5, 4], [3, 2], [1]]
    assert len(await store.versions("a-1")) == 5
    with pytest.raises(InvalidInputError):
        await store.versions("a-1", limit=-1)


# --- put: the startup upsert ------------------------------------------------------


async def test_put_creates_version_one_then_is_idempotent(store: AssistantStore) -> None:
    default = default_of("agent")

    first = await store.put(default)
    again = await store.put(default)

    assert first["version"] == 1
    assert first["assistant_id"] == default["assistant_id"]
    assert first["metadata"] == {"created_by": "system"}
    assert first["name"] == "agent"
    # The given timestamps and version are the store's to assign.
    assert first["created_at"] != default["created_at"].isoformat()
    assert again == first
    assert await store.get(default["assistant_id"]) == first
    assert await version_numbers(store, default["assistant_id"]) == [1]


async def test_put_writes_a_new_version_only_when_something_changed(
    store: AssistantStore,
) -> None:
    await store.put(default_of("agent"))

    changed = await store.put(default_of("agent", description="Now documented"))
    unchanged = await store.put(default_of("agent", description="Now documented"))

    assert changed["version"] == 2
    assert changed["description"] == "Now documented"
    assert unchanged == changed
    assert await version_numbers(store, changed["assistant_id"]) == [2, 1]


async def test_put_replaces_metadata_rather_than_merging(store: AssistantStore) -> None:
    put = await store.put(default_of("agent"))
    await store.update(put["assistant_id"], metadata={"extra": 1})

    restored = await store.put(default_of("agent"))

    assert restored["metadata"] == {"created_by": "system"}
    assert restored["version"] == 3


async def test_put_with_only_id_and_graph_uses_defaults(store: AssistantStore) -> None:
    put = await store.put({"assistant_id": "a-1", "graph_id": "agent"})

    assert (put["config"], put["context"], put["metadata"]) == ({}, {}, {})
    assert (put["name"], put["description"]) == (None, None)


async def test_put_refuses_unknown_keys_and_bad_values(store: AssistantStore) -> None:
    with pytest.raises(TypeError):
        await store.put({**default_of("agent"), "colour": "red"})
    with pytest.raises(InvalidInputError):
        await store.put({"graph_id": "agent"})
    with pytest.raises(InvalidPayloadError):
        await store.put({**default_of("agent"), "config": {"bad": object()}})

    assert await store.count() == 0


# --- search and count ---------------------------------------------------------------


@pytest.fixture
async def catalogue(store: AssistantStore) -> AssistantStore:
    await make(store, "a1", graph_id="agent", name="Research Helper", metadata={"team": {"id": 1}})
    await make(store, "a2", graph_id="agent", name="helper", metadata={"team": {"id": 2}})
    await make(store, "a3", graph_id="hitl", name="Reviewer 100%", metadata={"tags": ["x", "y"]})
    await make(store, "a4", graph_id="hitl", name=None, metadata={})
    await make(store, "a5", graph_id="other", name="under_score", metadata={"team": {"id": 1}})
    return store


async def found(store: AssistantStore, **filters: Any) -> list[str]:
    rows = await store.search(limit=100, sort_by="assistant_id", sort_order="asc", **filters)
    return [row["assistant_id"] for row in rows]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["a1", "a2", "a3", "a4", "a5"]),
        ({"graph_id": "agent"}, ["a1", "a2"]),
        ({"graph_id": "none"}, []),
        ({"name": "HELPER"}, ["a1", "a2"]),
        ({"name": "search h"}, ["a1"]),
        ({"name": "100%"}, ["a3"]),
        ({"name": "%"}, ["a3"]),
        ({"name": "_"}, ["a5"]),
        ({"name": "d_r"}, []),
        ({"metadata": {"team": {"id": 1}}}, ["a1", "a5"]),
        ({"metadata": {"tags": ["y"]}}, ["a3"]),
        ({"metadata": {"team": {}}, "graph_id": "agent", "name": "help"}, ["a1", "a2"]),
    ],
)
async def test_search_and_count_filter(
    catalogue: AssistantStore, filters: dict[str, Any], expected: list[str]
) -> None:
    assert await found(catalogue, **filters) == expected
    assert await catalogue.count(**filters) == len(expected)


async def test_search_pages_with_limit_and_offset(catalogue: AssistantStore) -> None:
    pages = [
        [
            a["assistant_id"]
            for a in await catalogue.search(
                limit=2, offset=offset, sort_by="assistant_id", sort_order="desc"
            )
        ]
        for offset in (0, 2, 4)
    ]

    assert pages == [["a5", "a4"], ["a3", "a2"], ["a1"]]
    assert await catalogue.search(limit=0) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"offset": -2}, {"sort_by": "version"}, {"sort_order": "sideways"}],
)
async def test_search_refuses_bad_paging_and_sorting(
    catalogue: AssistantStore, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        await catalogue.search(**kwargs)


async def test_metadata_filter_key_with_a_double_quote_is_refused(
    catalogue: AssistantStore,
) -> None:
    with pytest.raises(InvalidInputError):
        await catalogue.count(metadata={'x"': 1})


@pytest.mark.parametrize(
    "sort_by", ["assistant_id", "graph_id", "name", "created_at", "updated_at"]
)
async def test_search_sorts_by_every_key_in_both_orders(
    catalogue: AssistantStore, sort_by: str
) -> None:
    # updated_at in an order unrelated to ids and creation.
    for assistant_id in ("a3", "a1", "a5"):
        await catalogue.update(assistant_id, context={"touched": True})

    rows = await catalogue.search(sort_by=sort_by, sort_order="asc")  # type: ignore[arg-type]
    descending = await catalogue.search(sort_by=sort_by, sort_order="desc")  # type: ignore[arg-type]

    def key(assistant: dict[str, Any]) -> tuple[Any, str]:
        value = assistant[sort_by]
        if sort_by.endswith("_at"):
            value = instant(value)
        return ("" if value is None else value), assistant["assistant_id"]

    assert [a["assistant_id"] for a in rows] == [a["assistant_id"] for a in sorted(rows, key=key)]
    assert descending == rows[::-1]
    assert len(rows) == 5


async def test_ties_are_broken_by_assistant_id_in_the_sort_direction(
    catalogue: AssistantStore,
) -> None:
    asc = await catalogue.search(sort_by="graph_id", sort_order="asc")
    desc = await catalogue.search(sort_by="graph_id", sort_order="desc")

    assert [a["assistant_id"] for a in asc] == ["a1", "a2", "a3", "a4", "a5"]
    assert [a["assistant_id"] for a in desc] == ["a5", "a4", "a3", "a2", "a1"]


async def test_search_defaults_to_newest_first(catalogue: AssistantStore) -> None:
    rows = await catalogue.search()
    stamps = [instant(a["created_at"]) for a in rows]

    assert stamps == sorted(stamps, reverse=True)
    assert len(rows) == 5


# --- concurrency ----------------------------------------------------------------------


async def test_concurrent_updates_get_distinct_consecutive_versions(
    store: AssistantStore,
) -> None:
    await make(store, metadata={})

    results = await asyncio.gather(*(store.update("a-1", metadata={f"k{n}": n}) for n in range(6)))

    assert sorted(r["version"] for r in results if r is not None) == [2, 3, 4, 5, 6, 7]
    assert await version_numbers(store, "a-1") == [7, 6, 5, 4, 3, 2, 1]
    current = await store.get("a-1")
    assert current is not None
    assert current["metadata"] == {f"k{n}": n for n in range(6)}


async def test_concurrent_puts_of_one_default_write_one_version(store: AssistantStore) -> None:
    default = default_of("agent")

    results = await asyncio.gather(*(store.put(default) for _ in range(4)))

    assert {r["version"] for r in results} == {1}
    assert await version_numbers(store, default["assistant_id"]) == [1]
