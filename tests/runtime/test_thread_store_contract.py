"""One contract, three stores: every ThreadStore guarantee on memory, SQLite and Postgres.

Each test runs against ``MemoryThreadStore``, ``SqlThreadStore`` on a fresh
SQLite file and ``SqlThreadStore`` on a fresh Postgres database. Postgres's
``jsonb @>`` is the reference for metadata filters: the same cases must give
the same answer on every backend.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from runlane.db.engine import create_engine
from runlane.exceptions import (
    InvalidInputError,
    InvalidPayloadError,
    InvalidThreadIdError,
    InvalidThreadStatusError,
    ThreadExistsError,
)
from runlane.runtime.threads import THREAD_FIELDS, THREAD_STATUSES, ThreadStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved synchronously: the URL fixtures run their own event loops.
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(backend_url: str | None) -> AsyncIterator[ThreadStore]:
    if backend_url is None:
        from runlane.runtime.threads import MemoryThreadStore

        yield MemoryThreadStore()
        return
    from runlane.runtime.threads import SqlThreadStore

    engine = create_engine(backend_url)
    try:
        yield SqlThreadStore(engine)
    finally:
        await engine.dispose()


def instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"timestamp without offset: {value!r}"
    assert parsed.utcoffset() == timedelta(0), f"timestamp not in UTC: {value!r}"
    return parsed


async def ids_of(store: ThreadStore, **filters: Any) -> list[str]:
    return [thread["thread_id"] for thread in await store.search(limit=100, **filters)]


# --- create, get, update, delete -------------------------------------------


async def test_create_returns_an_idle_thread_that_get_reads_back(store: ThreadStore) -> None:
    created = await store.create("t-1", user_id="alice", metadata={"graph_id": "agent"})

    assert tuple(created) == THREAD_FIELDS
    assert created["thread_id"] == "t-1"
    assert created["user_id"] == "alice"
    assert created["status"] == "idle"
    assert created["metadata"] == {"graph_id": "agent"}
    assert instant(created["created_at"]) == instant(created["updated_at"])
    assert await store.get("t-1") == created


async def test_create_without_metadata_stores_an_empty_object(store: ThreadStore) -> None:
    created = await store.create("t-1")

    assert created["metadata"] == {}
    assert created["user_id"] is None
    assert (await store.get("t-1")) == created


async def test_create_an_existing_id_raises_and_changes_nothing(store: ThreadStore) -> None:
    original = await store.create("t-1", metadata={"v": 1})

    with pytest.raises(ThreadExistsError):
        await store.create("t-1", metadata={"v": 2})

    assert await store.get("t-1") == original


async def test_create_do_nothing_returns_the_existing_thread(store: ThreadStore) -> None:
    original = await store.create("t-1", user_id="alice", metadata={"v": 1})

    again = await store.create("t-1", user_id="alice", metadata={"v": 2}, if_exists="do_nothing")

    assert again == original
    assert await store.get("t-1") == original


async def test_create_do_nothing_never_returns_another_users_thread(store: ThreadStore) -> None:
    original = await store.create("t-1", user_id="alice", metadata={"secret": 1})

    with pytest.raises(ThreadExistsError):
        await store.create("t-1", user_id="bob", if_exists="do_nothing")

    assert await store.get("t-1") == original


@pytest.mark.parametrize("bad_id", ["", "a b", "x" * 65, "é", "a/b", None, 7])
async def test_create_refuses_a_malformed_id(store: ThreadStore, bad_id: Any) -> None:
    with pytest.raises(InvalidThreadIdError):
        await store.create(bad_id)

    assert await store.count() == 0


async def test_an_id_of_64_characters_is_accepted(store: ThreadStore) -> None:
    thread_id = "A-z_9" * 12 + "abcd"

    assert (await store.create(thread_id))["thread_id"] == thread_id


@pytest.mark.parametrize(
    "bad", [{"obj": object()}, {"s": {1, 2}}, {"b": b"bytes"}, ["not", "a dict"]]
)
async def test_non_json_metadata_is_refused_and_nothing_is_written(
    store: ThreadStore, bad: Any
) -> None:
    with pytest.raises(InvalidPayloadError):
        await store.create("t-1", metadata=bad)
    assert await store.get("t-1") is None

    original = await store.create("t-2", metadata={"keep": True})
    with pytest.raises(InvalidPayloadError):
        await store.update("t-2", metadata=bad)
    assert await store.get("t-2") == original


async def test_metadata_round_trips_json_values(store: ThreadStore) -> None:
    metadata = {
        "text": "héllo ✓ \"quoted\" 'single'",
        "int": 2**53,
        "neg": -7,
        "float": 0.1,
        "bools": [True, False],
        "null": None,
        "nested": {"list": [1, [2, {"x": None}]], "empty": {}, "": "empty key"},
    }

    await store.create("t-1", metadata=metadata)

    assert (await store.get("t-1"))["metadata"] == metadata  # type: ignore[index]


async def test_update_merges_metadata_at_the_top_level(store: ThreadStore) -> None:
    created = await store.create("t-1", metadata={"a": 1, "b": {"x": 1}, "c": 3})

    updated = await store.update("t-1", metadata={"b": {"y": 2}, "c": None, "d": [4]})

    assert updated is not None
    assert updated["metadata"] == {"a": 1, "b": {"y": 2}, "c": None, "d": [4]}
    assert updated["created_at"] == created["created_at"]
    assert instant(updated["updated_at"]) >= instant(created["updated_at"])
    assert await store.get("t-1") == updated


async def test_update_of_a_missing_thread_returns_none(store: ThreadStore) -> None:
    assert await store.update("nope", metadata={"a": 1}) is None
    assert await store.get("nope") is None


async def test_delete_removes_the_thread_once(store: ThreadStore) -> None:
    await store.create("t-1")
    await store.create("t-2")

    assert await store.delete("t-1") is True
    assert await store.delete("t-1") is False
    assert await store.get("t-1") is None
    assert await ids_of(store) == ["t-2"]


async def test_another_users_thread_reads_as_missing(store: ThreadStore) -> None:
    original = await store.create("t-1", user_id="alice", metadata={"a": 1})

    assert await store.get("t-1", user_id="bob") is None
    assert await store.update("t-1", metadata={"a": 2}, user_id="bob") is None
    assert await store.delete("t-1", user_id="bob") is False
    assert await ids_of(store, user_id="bob") == []
    assert await store.count(user_id="bob") == 0

    assert await store.get("t-1", user_id="alice") == original
    assert await store.get("t-1") == original
    assert await ids_of(store, user_id="alice") == ["t-1"]
    assert await store.count(user_id="alice") == 1
    assert await store.delete("t-1", user_id="alice") is True


# --- set_status ---------------------------------------------------------------


@pytest.mark.parametrize("status", THREAD_STATUSES)
async def test_set_status_writes_each_thread_status(store: ThreadStore, status: str) -> None:
    created = await store.create("t-1")

    assert await store.set_status("t-1", status) is True  # type: ignore[arg-type]

    thread = await store.get("t-1")
    assert thread is not None
    assert thread["status"] == status
    assert instant(thread["updated_at"]) >= instant(created["updated_at"])


async def test_set_status_of_a_missing_thread_returns_false(store: ThreadStore) -> None:
    assert await store.set_status("nope", "busy") is False
    assert await store.get("nope") is None


@pytest.mark.parametrize("bad", ["running", "IDLE", "", None, "success"])
async def test_set_status_refuses_an_unknown_status_and_writes_nothing(
    store: ThreadStore, bad: Any
) -> None:
    await store.create("t-1")
    await store.set_status("t-1", "busy")
    before = await store.get("t-1")

    with pytest.raises(InvalidThreadStatusError):
        await store.set_status("t-1", bad)

    assert await store.get("t-1") == before


# --- search and count: filters ----------------------------------------------

DOCS: dict[str, dict[str, Any]] = {
    "t1": {
        "graph_id": "agent",
        "owner": {"name": "ann", "team": {"id": 7}},
        "tags": ["a", "b"],
        "n": 1,
        "flag": True,
        "none": None,
    },
    "t2": {"graph_id": "agent", "owner": {"name": "bob"}, "tags": ["b"], "n": 1.5, "flag": False},
    "t3": {"graph_id": "hitl", "n": "1", "tags": [{"k": "v", "w": 1}], "nested": [[1, 2], [3]]},
    "t4": {"a.b": 1, "a": {"b": 2}, "odd key's": "x"},
    "t5": {},
}

FILTER_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["t1", "t2", "t3", "t4", "t5"]),
    ({"graph_id": "agent"}, ["t1", "t2"]),
    ({"graph_id": "none-such"}, []),
    ({"owner": {"name": "ann"}}, ["t1"]),
    ({"owner": {"team": {"id": 7}}}, ["t1"]),
    ({"owner": {"team": {"id": 8}}}, []),
    ({"owner": {}}, ["t1", "t2"]),
    ({"owner": "ann"}, []),
    ({"tags": ["b"]}, ["t1", "t2"]),
    ({"tags": ["b", "a"]}, ["t1"]),
    ({"tags": ["b", "b"]}, ["t1", "t2"]),
    ({"tags": []}, ["t1", "t2", "t3"]),
    ({"tags": "b"}, []),
    ({"tags": [{"k": "v"}]}, ["t3"]),
    ({"tags": [{"k": "x"}]}, []),
    ({"nested": [[3]]}, ["t3"]),
    ({"nested": [[2, 1]]}, ["t3"]),
    ({"nested": [[1, 3]]}, []),
    ({"n": 1}, ["t1"]),
    ({"n": 1.0}, ["t1"]),
    ({"n": 1.5}, ["t2"]),
    ({"n": "1"}, ["t3"]),
    ({"n": True}, []),
    ({"flag": True}, ["t1"]),
    ({"flag": False}, ["t2"]),
    ({"flag": 1}, []),
    ({"none": None}, ["t1"]),
    ({"missing": None}, []),
    ({"graph_id": "agent", "n": 1.5}, ["t2"]),
    ({"graph_id": "agent", "tags": ["a"], "owner": {"team": {}}}, ["t1"]),
    ({"a.b": 1}, ["t4"]),
    ({"a": {"b": 2}}, ["t4"]),
    ({"a": {"b": 1}}, []),
    ({"odd key's": "x"}, ["t4"]),
]


@pytest.fixture
async def documents(store: ThreadStore) -> ThreadStore:
    for thread_id, metadata in DOCS.items():
        await store.create(thread_id, metadata=metadata)
    return store


@pytest.mark.parametrize(("want", "expected"), FILTER_CASES, ids=[str(c[0]) for c in FILTER_CASES])
async def test_metadata_filter_is_containment(
    documents: ThreadStore, want: dict[str, Any], expected: list[str]
) -> None:
    found = await ids_of(documents, metadata=want, sort_by="thread_id", sort_order="asc")

    assert found == expected
    assert await documents.count(metadata=want) == len(expected)


async def test_a_filter_key_with_a_double_quote_is_refused(documents: ThreadStore) -> None:
    with pytest.raises(InvalidInputError):
        await documents.search(metadata={'a"b': 1})
    with pytest.raises(InvalidInputError):
        await documents.count(metadata={"a": {'"': 1}})


async def test_search_by_ids(documents: ThreadStore) -> None:
    assert await ids_of(documents, ids=["t3", "t1", "zz"], sort_by="thread_id") == ["t3", "t1"]
    assert await ids_of(documents, ids=[]) == []
    assert await ids_of(documents, ids=["t1", "t3"], metadata={"graph_id": "hitl"}) == ["t3"]


async def test_search_and_count_by_status(documents: ThreadStore) -> None:
    await documents.set_status("t2", "busy")
    await documents.set_status("t4", "busy")
    await documents.set_status("t5", "error")

    assert await ids_of(documents, status="busy", sort_by="thread_id") == ["t4", "t2"]
    assert await ids_of(documents, status="interrupted") == []
    assert await documents.count(status="busy") == 2
    assert await documents.count(status="idle") == 2
    assert await documents.count(status="busy", metadata={"graph_id": "agent"}) == 1
    with pytest.raises(InvalidThreadStatusError):
        await documents.search(status="running")
    with pytest.raises(InvalidThreadStatusError):
        await documents.count(status="running")


async def test_limit_and_offset_page_through_every_thread_once(documents: ThreadStore) -> None:
    everything = await ids_of(documents, sort_by="thread_id", sort_order="asc")
    pages = [
        [
            t["thread_id"]
            for t in await documents.search(
                limit=2, offset=offset, sort_by="thread_id", sort_order="asc"
            )
        ]
        for offset in (0, 2, 4, 6)
    ]

    assert everything == ["t1", "t2", "t3", "t4", "t5"]
    assert pages == [["t1", "t2"], ["t3", "t4"], ["t5"], []]
    assert await documents.search(limit=0) == []
    assert len(await documents.search()) == 5  # default limit 10


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"offset": -1}, {"sort_by": "metadata"}, {"sort_order": "up"}],
)
async def test_search_refuses_bad_paging_and_sorting(
    documents: ThreadStore, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        await documents.search(**kwargs)


@pytest.mark.parametrize("sort_by", ["thread_id", "status", "created_at", "updated_at"])
async def test_search_sorts_by_every_key_in_both_orders(store: ThreadStore, sort_by: str) -> None:
    names = ["b-2", "a_1", "C", "a-1", "b_2", "c", "A"]
    for name in names:
        await store.create(name)
    # Statuses and updated_at in an order unrelated to names and creation.
    shuffled = random.Random(5).sample(names, len(names))
    for index, name in enumerate(shuffled):
        await store.set_status(name, THREAD_STATUSES[index % 3])  # type: ignore[arg-type]

    rows = await store.search(limit=100, sort_by=sort_by, sort_order="asc")  # type: ignore[arg-type]
    descending = await store.search(limit=100, sort_by=sort_by, sort_order="desc")  # type: ignore[arg-type]

    def key(thread: dict[str, Any]) -> tuple[Any, str]:
        value = thread[sort_by]
        if sort_by.endswith("_at"):
            value = instant(value)
        return value, thread["thread_id"]

    assert [t["thread_id"] for t in rows] == [t["thread_id"] for t in sorted(rows, key=key)]
    assert descending == rows[::-1]
    assert {t["thread_id"] for t in rows} == set(names)


async def test_ties_are_broken_by_thread_id_in_the_sort_direction(store: ThreadStore) -> None:
    for name in ["m", "b", "z", "a"]:
        await store.create(name)

    assert await ids_of(store, sort_by="status", sort_order="asc") == ["a", "b", "m", "z"]
    assert await ids_of(store, sort_by="status", sort_order="desc") == ["z", "m", "b", "a"]


async def test_created_at_orders_newest_first_by_default(store: ThreadStore) -> None:
    for name in ["t1", "t2", "t3"]:
        await store.create(name)

    rows = await store.search()
    stamps = [instant(t["created_at"]) for t in rows]

    assert stamps == sorted(stamps, reverse=True)


async def test_concurrent_metadata_updates_are_all_kept(store: ThreadStore) -> None:
    await store.create("t-1", metadata={"base": 0})

    await asyncio.gather(*(store.update("t-1", metadata={f"k{n}": n}) for n in range(6)))

    thread = await store.get("t-1")
    assert thread is not None
    assert thread["metadata"] == {"base": 0} | {f"k{n}": n for n in range(6)}


async def test_concurrent_creates_of_one_id_make_one_thread(store: ThreadStore) -> None:
    results = await asyncio.gather(
        *(store.create("t-1", metadata={"n": n}, if_exists="do_nothing") for n in range(4))
    )

    assert len({r["metadata"]["n"] for r in results}) == 1
    assert await store.count() == 1
