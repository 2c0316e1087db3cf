"""One contract, four stores: every EventStore guarantee on memory, SQLite, Postgres and JSONL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from runlane.exceptions import InvalidInputError, InvalidPayloadError, InvalidThreadIdError
from runlane.runtime.events import EVENT_FIELDS, EventPage, EventStore

from .conftest import ev

pytestmark = pytest.mark.anyio


def seqs(page: EventPage) -> list[int]:
    return [item["seq"] for item in page.items]


async def all_events(store: EventStore, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    return (await store.list_events(thread_id, run_id, limit=10_000)).items


# --- the envelope and seq ----------------------------------------------------


async def test_put_returns_the_stored_envelope(store: EventStore) -> None:
    row = await store.put(ev(content="hi", user_id="alice", model="m"))

    assert tuple(row) == EVENT_FIELDS
    assert row["seq"] == 1
    assert row["content"] == "hi"
    assert row["metadata"] == {"model": "m"}
    assert row["user_id"] == "alice"
    created = datetime.fromisoformat(row["created_at"])
    assert created.tzinfo is not None
    assert created.utcoffset() == timedelta(0)
    assert await all_events(store, "t-1", "r-1") == [row]


async def test_seq_is_dense_per_thread(store: EventStore) -> None:
    first = [(await store.put(ev("t-1")))["seq"] for _ in range(3)]
    other = (await store.put(ev("t-2")))["seq"]
    later = (await store.put(ev("t-1", "r-2")))["seq"]

    assert first == [1, 2, 3]
    assert other == 1
    assert later == 4


async def test_put_batch_spans_threads_and_runs_in_input_order(store: EventStore) -> None:
    batch = [
        ev("t-1", "r-1", content="a"),
        ev("t-2", "r-2", content="b"),
        ev("t-1", "r-3", content="c"),
        ev("t-1", "r-1", category="trace", event_type="llm_end", content="d"),
        ev("t-2", "r-2", content="e"),
    ]
    await store.put(ev("t-2", "r-0", content="before"))

    rows = await store.put_batch(batch)

    assert [(r["thread_id"], r["seq"], r["content"]) for r in rows] == [
        ("t-1", 1, "a"),
        ("t-2", 2, "b"),
        ("t-1", 2, "c"),
        ("t-1", 3, "d"),
        ("t-2", 3, "e"),
    ]
    assert [r["content"] for r in await all_events(store, "t-1", "r-1")] == ["a", "d"]
    assert [r["content"] for r in await all_events(store, "t-1", "r-3")] == ["c"]
    assert [r["content"] for r in await all_events(store, "t-2", "r-2")] == ["b", "e"]
    page = await store.list_messages("t-1")
    assert [(r["seq"], r["run_id"]) for r in page.items] == [(1, "r-1"), (2, "r-3")]
    assert await store.put_batch([]) == []


# --- content -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"z": 1, "a": [1, 2.5, None, True], "nested": {"é": "✓"}, "": {}},
        [1, "two", {"three": 3}],
        42,
        -0.5,
        True,
        None,
        "",
        '{"looks": "like json"}',
        "plain ✓ text",
        "a NUL \x00 and a newline \n inside",
    ],
)
async def test_content_round_trips_as_json(store: EventStore, content: Any) -> None:
    await store.put(ev(content=content))

    (row,) = await all_events(store, "t-1", "r-1")

    assert row["content"] == content
    assert type(row["content"]) is type(content)
    if isinstance(content, dict):
        assert list(row["content"]) == list(content)  # key order survives
    assert row["metadata"] == {}


async def test_tuples_come_back_as_lists(store: EventStore) -> None:
    row = await store.put(ev(content={"pair": (1, 2)}))

    assert row["content"] == {"pair": [1, 2]}
    assert (await all_events(store, "t-1", "r-1"))[0]["content"] == {"pair": [1, 2]}


@pytest.mark.parametrize("bad", [object(), {"set": {1, 2}}, {"b": b"bytes"}, {1: "int key"}])
async def test_non_json_content_is_refused_and_nothing_is_written(
    store: EventStore, bad: Any
) -> None:
    with pytest.raises(InvalidPayloadError):
        await store.put_batch([ev(content="fine"), ev(content=bad)])
    with pytest.raises(InvalidPayloadError):
        await store.put(ev(content="fine", bad=bad))
    with pytest.raises(InvalidPayloadError):
        await store.put(ev(content="fine", nul={"deep": ["a\x00b"]}))

    assert await store.count_messages("t-1") == 0
    assert (await store.put(ev()))["seq"] == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"thread_id": "bad/thread"}, InvalidThreadIdError),
        ({"thread_id": ""}, InvalidThreadIdError),
        ({"run_id": "../escape"}, InvalidInputError),
        ({"run_id": "r" * 65}, InvalidInputError),
        ({"category": "chat"}, InvalidInputError),
        ({"event_type": ""}, InvalidInputError),
        ({"event_type": "x" * 65}, InvalidInputError),
        ({"user_id": "u" * 65}, InvalidInputError),
    ],
)
async def test_malformed_events_are_refused(
    store: EventStore, change: dict[str, str], error: type[Exception]
) -> None:
    bad = dataclasses.replace(ev(), **change)

    with pytest.raises(error):
        await store.put_batch([ev(), bad])
    with pytest.raises(error):
        await store.put_if_absent(bad)

    assert await store.count_messages("t-1") == 0


async def test_long_text_is_truncated_by_bytes_on_a_character_boundary(
    store: EventStore,
) -> None:
    store.max_content_bytes = 10
    text = "ab✓✓✓✓"  # 2 + 4 * 3 = 14 bytes; 10 bytes cut inside the third ✓

    row = await store.put(ev(category="trace", event_type="tool_end", content=text, keep=1))

    assert row["content"] == "ab✓✓"
    assert len(row["content"].encode()) <= 10
    assert row["metadata"] == {"keep": 1, "truncated": True, "original_bytes": 14}
    assert (await all_events(store, "t-1", "r-1")) == [row]


async def test_long_json_is_truncated_to_text_and_flagged(store: EventStore) -> None:
    store.max_content_bytes = 12
    content = {"key": "välue-that-is-long"}

    row = await store.put(ev(content=content))

    encoded = '{"key":"välue-that-is-long"}'.encode()
    assert row["content"] == encoded[:12].decode()
    assert row["metadata"] == {
        "truncated": True,
        "original_bytes": len(encoded),
        "truncated_json": True,
    }
    assert (await all_events(store, "t-1", "r-1")) == [row]


async def test_content_at_the_limit_is_kept_whole(store: EventStore) -> None:
    store.max_content_bytes = 6
    row = await store.put(ev(content="ab✓b"))  # exactly 6 bytes
    assert row["content"] == "ab✓b"
    assert row["metadata"] == {}
    row = await store.put(ev(content=[1, 2, 3]))  # "[1,2,3]" is 7 bytes
    assert row["content"] == "[1,2,3"
    assert row["metadata"]["truncated"] is True


# --- paging ----------------------------------------------------------------------


async def _messages_between_traces(store: EventStore, count: int = 10) -> list[int]:
    """``count`` messages of r-1 (content = index), each followed by a trace event."""
    batch = []
    for index in range(count):
        batch.append(ev(content=index))
        batch.append(ev(category="trace", event_type="llm_end", content={"i": index}))
    rows = await store.put_batch(batch)
    return [row["seq"] for row in rows if row["category"] == "message"]


@pytest.mark.parametrize("by_run", [False, True])
async def test_messages_page_forward_with_has_more(store: EventStore, by_run: bool) -> None:
    message_seqs = await _messages_between_traces(store)
    await store.put(ev(run_id="r-2", content="other run"))

    async def page(**kwargs: Any) -> EventPage:
        if by_run:
            return await store.list_messages_by_run("t-1", "r-1", **kwargs)
        return await store.list_messages("t-1", **kwargs)

    first = await page(limit=4)
    assert seqs(first) == message_seqs[:4]
    assert first.has_more
    assert [item["content"] for item in first.items] == [0, 1, 2, 3]
    second = await page(limit=4, after_seq=first.items[-1]["seq"])
    assert seqs(second) == message_seqs[4:8]
    assert second.has_more
    rest = await page(limit=4, after_seq=second.items[-1]["seq"])
    expected = message_seqs[8:] if by_run else [*message_seqs[8:], 21]
    assert seqs(rest) == expected[:4]
    assert rest.has_more is False
    exact = await page(limit=len(expected), after_seq=second.items[-1]["seq"])
    assert exact.has_more is False
    assert (await page(after_seq=10_000)) == EventPage([], False)


@pytest.mark.parametrize("by_run", [False, True])
async def test_messages_page_backward_with_has_more(store: EventStore, by_run: bool) -> None:
    message_seqs = await _messages_between_traces(store)

    async def page(**kwargs: Any) -> EventPage:
        if by_run:
            return await store.list_messages_by_run("t-1", "r-1", **kwargs)
        return await store.list_messages("t-1", **kwargs)

    last = await page(limit=4, before_seq=10_000)
    assert seqs(last) == message_seqs[-4:]
    assert last.has_more
    earlier = await page(limit=4, before_seq=last.items[0]["seq"])
    assert seqs(earlier) == message_seqs[2:6]
    assert earlier.has_more
    start = await page(limit=4, before_seq=earlier.items[0]["seq"])
    assert seqs(start) == message_seqs[:2]
    assert start.has_more is False
    assert (await page(before_seq=1)) == EventPage([], False)
    window = await page(limit=2, after_seq=message_seqs[2], before_seq=message_seqs[7])
    assert seqs(window) == message_seqs[3:5]
    assert window.has_more
    window = await page(limit=4, after_seq=message_seqs[2], before_seq=message_seqs[7])
    assert seqs(window) == message_seqs[3:7]
    assert window.has_more is False


async def test_list_events_filters_by_type_and_pages_forward(store: EventStore) -> None:
    await _messages_between_traces(store, 5)
    await store.put(ev(run_id="r-2", category="trace", event_type="llm_end"))
    await store.put(ev(category="lifecycle", event_type="run_error", content={"e": "x"}))

    everything = await store.list_events("t-1", "r-1")
    assert seqs(everything) == [*range(1, 11), 12]
    assert everything.has_more is False
    assert seqs(await store.list_events("t-1", "r-1", event_types=[])) == seqs(everything)

    traces = await store.list_events("t-1", "r-1", event_types=["llm_end"], limit=3)
    assert seqs(traces) == [2, 4, 6]
    assert traces.has_more
    traces = await store.list_events("t-1", "r-1", event_types=["llm_end"], after_seq=6)
    assert seqs(traces) == [8, 10]
    assert traces.has_more is False
    mixed = await store.list_events("t-1", "r-1", event_types=["run_error", "ai_message"])
    assert seqs(mixed) == [1, 3, 5, 7, 9, 12]
    assert mixed.items[-1]["content"] == {"e": "x"}
    assert (await store.list_events("t-1", "r-1", event_types=["nope"])).items == []
    assert (await store.list_events("t-1", "r-9")).items == []


@pytest.mark.parametrize("limit", [0, -1, True])
async def test_a_limit_below_one_is_refused(store: EventStore, limit: Any) -> None:
    await store.put(ev())
    with pytest.raises(InvalidInputError):
        await store.list_messages("t-1", limit=limit)
    with pytest.raises(InvalidInputError):
        await store.list_events("t-1", "r-1", limit=limit)


async def test_unknown_and_malformed_threads_read_as_empty(store: EventStore) -> None:
    await store.put(ev())
    for thread_id in ("t-9", "../t-1", ""):
        assert await store.list_messages(thread_id) == EventPage([], False)
        assert await store.list_messages_by_run(thread_id, "r-1") == EventPage([], False)
        assert await store.list_events(thread_id, "r-1") == EventPage([], False)
        assert await store.count_messages(thread_id) == 0
        assert await store.delete_by_thread(thread_id) == 0
        assert await store.delete_by_run(thread_id, "r-1") == 0
    assert await store.count_messages("t-1") == 1


# --- counts and users --------------------------------------------------------------


async def test_count_messages_by_thread_run_and_user(store: EventStore) -> None:
    await store.put_batch(
        [
            ev(run_id="r-1", user_id="alice"),
            ev(run_id="r-1", category="trace", event_type="llm_end", user_id="alice"),
            ev(run_id="r-2", user_id="bob"),
            ev(run_id="r-2", user_id="bob"),
            ev("t-2", "r-3", user_id="alice"),
        ]
    )

    assert await store.count_messages("t-1") == 3
    assert await store.count_messages("t-1", run_id="r-2") == 2
    assert await store.count_messages("t-1", user_id="alice") == 1
    assert await store.count_messages("t-1", run_id="r-2", user_id="alice") == 0
    assert await store.count_messages("t-2") == 1


async def test_reads_given_a_user_see_only_that_users_events(store: EventStore) -> None:
    await store.put_batch(
        [
            ev(content="a1", user_id="alice"),
            ev(content="b1", user_id="bob"),
            ev(content="n1"),
            ev(content="a2", user_id="alice"),
        ]
    )

    def contents(page: EventPage) -> list[Any]:
        return [item["content"] for item in page.items]

    assert contents(await store.list_messages("t-1", user_id="alice")) == ["a1", "a2"]
    assert contents(await store.list_messages("t-1", user_id="bob")) == ["b1"]
    assert contents(await store.list_messages("t-1")) == ["a1", "b1", "n1", "a2"]
    alice_first = await store.list_messages("t-1", user_id="alice", limit=1)
    assert contents(alice_first) == ["a1"]
    assert alice_first.has_more
    assert contents(await store.list_messages("t-1", user_id="bob", limit=1)) == ["b1"]
    assert not (await store.list_messages("t-1", user_id="bob", limit=1)).has_more
    by_run = await store.list_messages_by_run("t-1", "r-1", user_id="alice", before_seq=99)
    assert contents(by_run) == ["a1", "a2"]
    assert contents(await store.list_events("t-1", "r-1", user_id="bob")) == ["b1"]
    assert (await store.list_messages("t-1", user_id="carol")).items == []


# --- put_if_absent -------------------------------------------------------------------


async def test_put_if_absent_writes_once_per_run_and_type(store: EventStore) -> None:
    receipt = ev(category="lifecycle", event_type="run.delivery", content={"ok": True})

    first = await store.put_if_absent(receipt)
    second = await store.put_if_absent(receipt)
    other_run = await store.put_if_absent(
        ev(run_id="r-2", category="lifecycle", event_type="run.delivery")
    )
    other_type = await store.put_if_absent(ev(category="lifecycle", event_type="run_end"))

    assert first is not None
    assert first["seq"] == 1
    assert first["content"] == {"ok": True}
    assert second is None
    assert other_run is not None
    assert other_run["seq"] == 2
    assert other_type is not None
    assert other_type["seq"] == 3
    assert seqs(await store.list_events("t-1", "r-1", event_types=["run.delivery"])) == [1]
    assert (await store.put(ev()))["seq"] == 4  # a refused call used no seq


async def test_put_if_absent_sees_events_written_by_put(store: EventStore) -> None:
    await store.put(ev(category="trace", event_type="llm_end"))

    assert await store.put_if_absent(ev(category="trace", event_type="llm_end")) is None
    assert (await store.put(ev(category="trace", event_type="llm_end")))["seq"] == 2


async def test_concurrent_put_if_absent_writes_exactly_one(store: EventStore) -> None:
    calls = [
        store.put_if_absent(ev(category="lifecycle", event_type="run.delivery", content=index))
        for index in range(20)
    ]

    results = await asyncio.gather(*calls)

    written = [row for row in results if row is not None]
    assert len(written) == 1
    assert written[0]["seq"] == 1
    assert await all_events(store, "t-1", "r-1") == written
    assert (await store.put(ev()))["seq"] == 2


# --- deletes ---------------------------------------------------------------------------


async def test_delete_by_run_removes_only_that_run_and_keeps_counting(store: EventStore) -> None:
    await store.put_batch([ev(run_id="r-1"), ev(run_id="r-2"), ev(run_id="r-1"), ev(run_id="r-2")])
    await store.put(ev("t-2", "r-2"))

    assert await store.delete_by_run("t-1", "r-2") == 2
    assert await store.delete_by_run("t-1", "r-2") == 0

    assert seqs(await store.list_messages("t-1")) == [1, 3]
    assert (await store.list_events("t-1", "r-2")).items == []
    assert await store.count_messages("t-2") == 1
    assert (await store.put(ev(run_id="r-3")))["seq"] == 5  # the largest seq is not reused
    assert await store.put_if_absent(ev(run_id="r-2")) is not None


async def test_delete_by_thread_removes_the_thread_and_its_counter(store: EventStore) -> None:
    await store.put_batch([ev(run_id="r-1"), ev(run_id="r-2"), ev("t-2", "r-3")])

    assert await store.delete_by_thread("t-1") == 2
    assert await store.delete_by_thread("t-1") == 0

    assert await store.list_messages("t-1") == EventPage([], False)
    assert await store.count_messages("t-1") == 0
    assert await store.count_messages("t-2") == 1
    assert (await store.put(ev("t-1", "r-1")))["seq"] == 1
    assert (await store.put(ev("t-2", "r-3")))["seq"] == 2
