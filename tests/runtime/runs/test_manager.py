"""RunManager: creating, reading, listing and hand-driven status changes.

The lanes and strategies live in ``test_manager_lanes.py``, persistence
(retries, row recreation, bad input) in ``test_manager_persistence.py``,
orphans, leases and eviction in ``test_manager_recovery.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from runlane.runtime import DisconnectMode, RunManager, RunStatus
from runlane.runtime.runs.store.base import RunStore
from runlane.runtime.runs.store.memory import MemoryRunStore
from tests.runtime.runs._manager_support import STORE_KINDS, resolve_store_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest) -> str | None:
    return resolve_store_url(request)


@pytest.fixture
def bare() -> RunManager:
    """A manager without a store: its local records are all there is."""
    return RunManager()


def _aware(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None, f"{stamp!r} has no UTC offset"
    return parsed


# -- creating and reading ------------------------------------------------------


async def test_a_new_run_keeps_what_the_request_said(bare: RunManager) -> None:
    run = await bare.create(
        "conv-7",
        "planner",
        metadata={"origin": "cli", "n": 3},
        kwargs={"input": {"messages": []}},
        multitask_strategy="reject",
    )

    assert run.status is RunStatus.pending
    assert (run.thread_id, run.assistant_id) == ("conv-7", "planner")
    assert run.metadata == {"origin": "cli", "n": 3}
    assert run.kwargs == {"input": {"messages": []}}
    assert run.multitask_strategy == "reject"
    assert run.store_only is False
    assert _aware(run.created_at) <= _aware(run.updated_at)
    assert await bare.get(run.run_id) is run


async def test_a_bare_run_gets_empty_defaults(bare: RunManager) -> None:
    run = await bare.create("conv-8")

    assert run.assistant_id is None
    assert run.metadata == {}
    assert run.kwargs == {}
    assert run.multitask_strategy == "reject"
    assert run.on_disconnect is DisconnectMode.cancel


async def test_each_run_gets_its_own_id(bare: RunManager) -> None:
    ids = set()
    for n in range(5):
        run = await bare.create(f"conv-{n}")
        ids.add(run.run_id)
    assert len(ids) == 5


async def test_unknown_run_reads_as_none(bare: RunManager) -> None:
    assert await bare.get("no-such-run") is None
    assert await bare.aget("no-such-run") is None


async def test_model_name_reaches_the_store(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject(
        "conv-9", assistant_id="planner", model_name="vendor/model-x:1", metadata={"k": "v"}
    )
    plain = await manager.create_or_reject("conv-10")

    assert run.model_name == "vendor/model-x:1"
    row = await store.get(run.run_id)
    assert row is not None
    assert row["model_name"] == "vendor/model-x:1"
    assert row["assistant_id"] == "planner"
    assert row["metadata"] == {"k": "v"}
    assert row["status"] == "pending"
    plain_row = await store.get(plain.run_id)
    assert plain_row is not None
    assert plain_row["model_name"] is None


# -- hand-driven statuses ---------------------------------------------------------


async def test_status_moves_forward_by_hand(bare: RunManager) -> None:
    run = await bare.create("conv-1")
    created = _aware(run.updated_at)

    assert await bare.set_status(run.run_id, RunStatus.running) is True
    assert run.status is RunStatus.running
    assert _aware(run.updated_at) >= created

    assert await bare.set_status(run.run_id, "success") is True
    assert run.status is RunStatus.success


async def test_failed_status_keeps_its_message(bare: RunManager) -> None:
    run = await bare.create("conv-1")

    await bare.set_status(run.run_id, RunStatus.error, error="tool exploded")

    assert run.status is RunStatus.error
    assert run.error == "tool exploded"


async def test_has_inflight_follows_the_active_run(bare: RunManager) -> None:
    assert await bare.has_inflight("conv-1") is False
    run = await bare.create("conv-1")
    assert await bare.has_inflight("conv-1") is True
    assert await bare.has_inflight("conv-2") is False

    await bare.set_status(run.run_id, RunStatus.success)

    assert await bare.has_inflight("conv-1") is False


async def test_has_inflight_sees_a_run_only_the_store_knows(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    await store.put("elsewhere", thread_id="conv-1", status="running")
    manager = make_manager()

    assert await manager.has_inflight("conv-1") is True
    assert await manager.has_inflight("conv-2") is False


async def test_cancelling_a_running_run_interrupts_it_everywhere(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1")
    await manager.set_status(run.run_id, RunStatus.running)

    assert await manager.cancel(run.run_id) is True

    assert run.abort_event.is_set()
    assert run.status is RunStatus.interrupted
    row = await store.get(run.run_id)
    assert row is not None
    assert row["status"] == "interrupted"


async def test_cancelling_a_finished_run_is_refused(bare: RunManager) -> None:
    run = await bare.create("conv-1")
    await bare.set_status(run.run_id, RunStatus.success)

    assert await bare.cancel(run.run_id) is False
    assert run.status is RunStatus.success
    assert not run.abort_event.is_set()


async def test_cancelling_an_unknown_run_is_refused(bare: RunManager) -> None:
    assert await bare.cancel("no-such-run") is False


async def test_cleanup_forgets_the_local_record(bare: RunManager) -> None:
    run = await bare.create("conv-1")

    await bare.cleanup(run.run_id, delay=0)

    assert await bare.get(run.run_id) is None
    assert bare.local_run_count == 0


# -- the store as the memory of past processes --------------------------------------


async def test_a_run_from_an_earlier_process_is_read_from_the_store(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    await store.put(
        "earlier",
        thread_id="conv-1",
        assistant_id="planner",
        status="success",
        multitask_strategy="enqueue",
        metadata={"from": "before"},
        kwargs={"input": "hi"},
        model_name="m-1",
        created_at="2026-02-01T08:00:00+00:00",
    )
    manager = make_manager()

    run = await manager.get("earlier")

    assert run is not None
    assert run.store_only is True
    assert run.task is None
    assert (run.run_id, run.thread_id, run.assistant_id) == ("earlier", "conv-1", "planner")
    assert run.status is RunStatus.success
    assert run.multitask_strategy == "enqueue"
    assert run.metadata == {"from": "before"}
    assert run.kwargs == {"input": "hi"}
    assert run.model_name == "m-1"
    assert _aware(run.created_at) == _aware("2026-02-01T08:00:00+00:00")
    via_aget = await manager.aget("earlier")
    assert via_aget is not None
    assert via_aget.status is RunStatus.success


async def test_rows_with_null_enums_read_with_safe_defaults() -> None:
    store = MemoryRunStore()
    await store.put(
        "nulls", thread_id="conv-1", status=None, on_disconnect=None, multitask_strategy=None
    )
    manager = RunManager(store)

    run = await manager.get("nulls")
    listed = await manager.list_by_thread("conv-1")

    assert run is not None
    assert run.status is RunStatus.pending
    assert run.on_disconnect is DisconnectMode.cancel
    assert run.multitask_strategy == "reject"
    assert [r.run_id for r in listed] == ["nulls"]
    assert listed[0].status is RunStatus.pending
    assert listed[0].on_disconnect is DisconnectMode.cancel


async def test_the_local_record_wins_over_the_store_row(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("conv-1")
    await store.update_status(run.run_id, "success")

    fetched = await manager.get(run.run_id)

    assert fetched is run
    assert fetched.status is RunStatus.pending


async def test_store_read_failures_degrade_to_what_is_local() -> None:
    class BrokenReads(MemoryRunStore):
        async def get(self, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
            raise RuntimeError("disk on fire")

        async def list_by_thread(self, thread_id: str, **options: Any) -> list[dict[str, Any]]:
            raise RuntimeError("disk on fire")

    manager = RunManager(BrokenReads())
    local = await manager.create("conv-1")

    assert await manager.get("somewhere-else") is None
    assert await manager.aget("somewhere-else") is None
    assert [r.run_id for r in await manager.list_by_thread("conv-1")] == [local.run_id]
    await manager.close()


# -- listing ----------------------------------------------------------------------------


async def test_listing_is_per_thread_and_newest_first(bare: RunManager) -> None:
    first = await bare.create("conv-1")
    await bare.set_status(first.run_id, RunStatus.success)
    second = await bare.create("conv-1")
    await bare.create("conv-2")

    listed = await bare.list_by_thread("conv-1")

    assert [r.run_id for r in listed] == [second.run_id, first.run_id]
    assert listed[0] is second


async def test_listing_keeps_creation_order_when_timestamps_tie(
    bare: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "runlane.runtime.runs.manager._now_iso", lambda: "2026-02-02T00:00:00+00:00"
    )
    runs = [await bare.create("conv-1") for _ in range(4)]

    listed = await bare.list_by_thread("conv-1")

    # Equal timestamps: the order of creation is kept (stable ordering).
    assert [r.run_id for r in listed] == [r.run_id for r in runs]


async def test_listing_honours_the_limit(bare: RunManager) -> None:
    for _ in range(5):
        await bare.create("conv-1")

    assert len(await bare.list_by_thread("conv-1", limit=2)) == 2


async def test_listing_merges_store_rows_with_local_records(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    await store.put(
        "older", thread_id="conv-1", status="success", created_at="2026-01-05T00:00:00+00:00"
    )
    await store.put(
        "foreign", thread_id="conv-2", status="success", created_at="2026-01-06T00:00:00+00:00"
    )
    manager = make_manager()
    local = await manager.create_or_reject("conv-1")

    listed = await manager.list_by_thread("conv-1")

    assert [r.run_id for r in listed] == [local.run_id, "older"]
    assert listed[0] is local
    assert listed[1].store_only is True


async def test_listing_after_a_restart_comes_from_the_store(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    before = make_manager()
    ok = await before.create_or_reject("conv-1", "planner")
    await before.set_status(ok.run_id, RunStatus.success)
    failed = await before.create_or_reject("conv-1", "critic")
    await before.set_status(failed.run_id, RunStatus.error, error="nope")
    after = make_manager()

    listed = await after.list_by_thread("conv-1")

    assert {r.run_id: r.status for r in listed} == {
        ok.run_id: RunStatus.success,
        failed.run_id: RunStatus.error,
    }
    assert all(r.store_only and r.thread_id == "conv-1" for r in listed)
    assert {r.assistant_id for r in listed} == {"planner", "critic"}
    by_id = {r.run_id: r for r in listed}
    assert by_id[failed.run_id].error == "nope"


async def test_listing_without_a_store_forgets_evicted_runs(bare: RunManager) -> None:
    run = await bare.create("conv-1")
    await bare.cleanup(run.run_id)

    assert await bare.list_by_thread("conv-1") == []


# -- user scoping ------------------------------------------------------------------------


async def test_local_runs_are_invisible_to_other_users(bare: RunManager) -> None:
    mine = await bare.create_or_reject("conv-1", user_id="alice")

    assert await bare.get(mine.run_id, user_id="alice") is mine
    assert await bare.get(mine.run_id, user_id="bob") is None
    assert await bare.get(mine.run_id) is mine
    assert [r.run_id for r in await bare.list_by_thread("conv-1", user_id="alice")] == [mine.run_id]
    assert await bare.list_by_thread("conv-1", user_id="bob") == []
    assert await bare.cancel(mine.run_id, user_id="bob") is False
    assert mine.status is RunStatus.pending


async def test_store_runs_are_invisible_to_other_users(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    await store.put(
        "a-1",
        thread_id="conv-1",
        user_id="alice",
        status="success",
        created_at="2026-01-01T00:00:00+00:00",
    )
    await store.put(
        "b-1",
        thread_id="conv-1",
        user_id="bob",
        status="success",
        created_at="2026-01-01T00:00:01+00:00",
    )
    manager = make_manager()

    alice_run = await manager.get("a-1", user_id="alice")
    assert alice_run is not None
    assert alice_run.user_id == "alice"
    assert await manager.get("a-1", user_id="bob") is None
    assert await manager.aget("b-1", user_id="alice") is None
    assert [r.run_id for r in await manager.list_by_thread("conv-1", user_id="alice")] == ["a-1"]
    assert [r.run_id for r in await manager.list_by_thread("conv-1", user_id="bob")] == ["b-1"]
    assert [r.run_id for r in await manager.list_by_thread("conv-1")] == ["b-1", "a-1"]
