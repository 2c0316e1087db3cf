"""What only the JSONL backend promises: its files, reopening, repair, and its index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from runlane.runtime.events import JsonlEventStore
from runlane.runtime.events import jsonl as jsonl_module

from .conftest import ev

pytestmark = pytest.mark.anyio


def run_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl"))


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_batch_spanning_runs_goes_to_each_runs_file(tmp_path: Path) -> None:
    store = JsonlEventStore(tmp_path)

    await store.put_batch(
        [
            ev("t-1", "r-1", content="a"),
            ev("t-1", "r-2", content="b"),
            ev("t-2", "r-3", content="c"),
        ]
    )
    await store.put(ev("t-1", "r-1", content="d"))

    assert run_files(tmp_path) == [
        "t-1/r-1.jsonl",
        "t-1/r-2.jsonl",
        "t-2/r-3.jsonl",
    ]
    assert [(r["seq"], r["content"]) for r in lines(tmp_path / "t-1" / "r-1.jsonl")] == [
        (1, "a"),
        (3, "d"),
    ]
    assert [(r["seq"], r["content"]) for r in lines(tmp_path / "t-1" / "r-2.jsonl")] == [(2, "b")]
    assert [(r["seq"], r["content"]) for r in lines(tmp_path / "t-2" / "r-3.jsonl")] == [(1, "c")]


async def test_a_new_store_reads_the_files_and_continues_the_seq(tmp_path: Path) -> None:
    first = JsonlEventStore(tmp_path)
    await first.put_batch(
        [ev(run_id="r-1"), ev(run_id="r-2", content={"k": [1]}), ev(run_id="r-2")]
    )
    await first.put_if_absent(ev(run_id="r-1", category="lifecycle", event_type="run.delivery"))
    assert await first.delete_by_run("t-1", "r-1") == 2  # held seq 4, the largest

    second = JsonlEventStore(tmp_path)

    assert [r["seq"] for r in (await second.list_messages("t-1")).items] == [2, 3]
    assert (await second.list_messages("t-1")).items[0]["content"] == {"k": [1]}
    assert (await second.put(ev(run_id="r-3")))["seq"] == 5
    assert await second.put_if_absent(ev(run_id="r-2", event_type="ai_message")) is None


async def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    await JsonlEventStore(tmp_path).put_batch([ev(content="a"), ev(content="b")])
    path = tmp_path / "t-1" / "r-1.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"thread_id": "t-1", "se')  # a crash mid-write

    store = JsonlEventStore(tmp_path)
    row = await store.put(ev(content="c"))

    assert row["seq"] == 3
    assert [r["content"] for r in lines(path)] == ["a", "b", "c"]
    assert [r["content"] for r in (await store.list_messages("t-1")).items] == ["a", "b", "c"]


async def test_pages_use_the_index_and_read_only_their_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JsonlEventStore(tmp_path)
    await writer.put_batch([ev(run_id=f"r-{i % 5}", content=i) for i in range(50)])
    scans: list[Path] = []
    reads: list[list[str]] = []
    real_scan, real_read = jsonl_module._scan_thread, jsonl_module._read

    def scan(directory: Path) -> Any:
        scans.append(directory)
        return real_scan(directory)

    def read(directory: Path, entries: Sequence[Any]) -> Any:
        reads.append([entry.run_id for entry in entries])
        return real_read(directory, entries)

    monkeypatch.setattr(jsonl_module, "_scan_thread", scan)
    monkeypatch.setattr(jsonl_module, "_read", read)
    store = JsonlEventStore(tmp_path)

    contents: list[Any] = []
    after = None
    while True:
        page = await store.list_messages("t-1", limit=7, after_seq=after)
        contents.extend(item["content"] for item in page.items)
        if not page.has_more:
            break
        after = page.items[-1]["seq"]
    by_run = await store.list_messages_by_run("t-1", "r-3", limit=2, before_seq=100)
    await store.put(ev(run_id="r-9", content=50))

    assert contents == list(range(50))
    assert [item["content"] for item in by_run.items] == [43, 48]
    assert scans == [tmp_path / "t-1"]  # once, then the index
    assert all(len(run_ids) <= 7 for run_ids in reads)
    assert reads[-1] == ["r-3", "r-3"]
    assert [r["content"] for r in (await store.list_messages("t-1", before_seq=99)).items][-1] == 50
    assert scans == [tmp_path / "t-1"]
