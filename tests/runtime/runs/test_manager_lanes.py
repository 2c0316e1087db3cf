"""RunManager lanes: strategies, start order, running work.

Every work coroutine here is gated by events (``GatedWork``): a run starts
when the manager gives it the lane and ends when the test releases it, so the
order of events is decided by the test, never by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from runlane.exceptions import ConflictError, UnsupportedStrategyError
from runlane.runtime import RunManager, RunStatus
from runlane.runtime.runs.schemas import RunRecord
from runlane.runtime.runs.store.base import RunStore
from tests.runtime.runs._manager_support import (
    LANE_KINDS,
    CallCountingStore,
    FakeClock,
    GatedWork,
    assert_stored_status,
    finish,
    resolve_store_url,
    row_count,
    settle,
    stored,
    wait_event,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LANE_KINDS)
def store_url(request: pytest.FixtureRequest) -> str | None:
    return resolve_store_url(request)


# -- reject ---------------------------------------------------------------------


async def test_reject_refuses_a_second_run_on_a_busy_thread(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    first = await manager.create_or_reject("lane-1", multitask_strategy="reject")

    with pytest.raises(ConflictError):
        await manager.create_or_reject("lane-1", multitask_strategy="reject")

    assert manager.local_run_count == 1
    assert [r.run_id for r in await manager.list_by_thread("lane-1")] == [first.run_id]
    assert first.status is RunStatus.pending
    # Another thread is not affected.
    await manager.create_or_reject("lane-2", multitask_strategy="reject")


async def test_reject_admits_again_once_the_thread_is_idle(
    make_manager: Callable[..., RunManager],
) -> None:
    manager = make_manager()
    first = await manager.create_or_reject("lane-1")
    await manager.set_status(first.run_id, RunStatus.success)

    second = await manager.create_or_reject("lane-1")

    assert second.queued is False
    assert second.status is RunStatus.pending


async def test_reject_under_concurrency_admits_exactly_one(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    # Two managers on one store stand for two processes: only the store decides.
    managers = [make_manager(), make_manager()] if store is not None else [make_manager()]

    async def attempt(n: int) -> RunRecord | BaseException:
        try:
            return await managers[n % len(managers)].create_or_reject("busy", user_id=f"u{n}")
        except ConflictError as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))

    admitted = [o for o in outcomes if isinstance(o, RunRecord)]
    refused = [o for o in outcomes if isinstance(o, ConflictError)]
    assert (len(admitted), len(refused)) == (1, 49)
    if store is not None:
        assert await row_count(store, "busy") == 1


# -- interrupt and rollback ------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_preempting_strategy_ends_the_running_run(
    make_manager: Callable[..., RunManager], store: RunStore | None, strategy: str
) -> None:
    manager = make_manager()
    gate = GatedWork()
    old = await manager.create_or_reject("lane-1")
    manager.start(old.run_id, gate.work(old.run_id))
    await wait_event(gate.started[old.run_id], what="old run started")

    new = await manager.create_or_reject("lane-1", multitask_strategy=strategy)

    assert new.run_id != old.run_id
    assert new.queued is False
    assert old.status is RunStatus.interrupted
    assert old.abort_event.is_set()
    await wait_event(gate.cancelled[old.run_id], what="old work cancelled")
    await finish(old)
    await assert_stored_status(store, old.run_id, "interrupted")
    row = await stored(store, old.run_id)
    if row is not None:
        assert row["cancel_action"] == strategy

    manager.start(new.run_id, gate.work(new.run_id))
    await wait_event(gate.started[new.run_id], what="new run started")
    gate.release[new.run_id].set()
    await finish(new)
    assert new.status is RunStatus.success
    await assert_stored_status(store, new.run_id, "success")
    assert gate.order == [old.run_id, new.run_id]


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_preempting_a_run_driven_by_hand_persists_interrupted(
    make_manager: Callable[..., RunManager], store: RunStore | None, strategy: str
) -> None:
    manager = make_manager()
    old = await manager.create_or_reject("lane-1")
    await manager.set_status(old.run_id, RunStatus.running)

    await manager.create_or_reject("lane-1", multitask_strategy=strategy)

    assert old.status is RunStatus.interrupted
    await assert_stored_status(store, old.run_id, "interrupted")


async def test_preempting_an_idle_thread_just_admits(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    done = await manager.create_or_reject("lane-1")
    await manager.set_status(done.run_id, RunStatus.success)

    new = await manager.create_or_reject("lane-1", multitask_strategy="interrupt")

    assert new.queued is False
    assert done.status is RunStatus.success
    await assert_stored_status(store, done.run_id, "success")


# -- enqueue ----------------------------------------------------------------------------


async def test_enqueue_stores_the_waiting_run_as_pending(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    head = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    waiting = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")

    assert head.queued is False
    assert waiting.queued is True
    assert waiting.status is RunStatus.pending
    row = await stored(store, waiting.run_id)
    if store is not None:
        assert row is not None
        assert row["status"] == "pending"
        assert row["queued"] is True
        assert row["multitask_strategy"] == "enqueue"


async def test_enqueued_runs_start_in_creation_order_one_at_a_time(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    runs = [
        await manager.create_or_reject("lane-1", multitask_strategy="enqueue") for _ in range(4)
    ]
    # Hand the work over in reverse: creation order must win anyway.
    for run in reversed(runs):
        manager.start(run.run_id, gate.work(run.run_id))

    for i, run in enumerate(runs):
        await wait_event(gate.started[run.run_id], what=f"run {i} started")
        await settle()
        # Exactly this run is inside its work; everyone behind it still waits.
        assert gate.order == [r.run_id for r in runs[: i + 1]]
        assert run.status is RunStatus.running
        await assert_stored_status(store, run.run_id, "running")
        for later in runs[i + 1 :]:
            assert later.status is RunStatus.pending
            await assert_stored_status(store, later.run_id, "pending")
        gate.release[run.run_id].set()
        await finish(run)
        assert run.status is RunStatus.success

    assert gate.max_concurrent == 1
    for run in runs:
        await assert_stored_status(store, run.run_id, "success")


async def test_lanes_of_different_threads_do_not_wait_for_each_other(
    make_manager: Callable[..., RunManager],
) -> None:
    manager = make_manager()
    gate = GatedWork()
    a = await manager.create_or_reject("lane-a", multitask_strategy="enqueue")
    b = await manager.create_or_reject("lane-b", multitask_strategy="enqueue")
    manager.start(a.run_id, gate.work(a.run_id))
    manager.start(b.run_id, gate.work(b.run_id))

    await wait_event(gate.started[a.run_id], what="lane a started")
    await wait_event(gate.started[b.run_id], what="lane b started")

    assert gate.max_concurrent == 2
    gate.release[a.run_id].set()
    gate.release[b.run_id].set()
    await finish(a)
    await finish(b)


async def test_cancelling_a_waiting_run_means_it_never_starts(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    head, skipped, last = [
        await manager.create_or_reject("lane-1", multitask_strategy="enqueue") for _ in range(3)
    ]
    for run in (head, skipped, last):
        manager.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[head.run_id], what="head started")

    assert await manager.cancel(skipped.run_id) is True

    assert skipped.status is RunStatus.interrupted
    await assert_stored_status(store, skipped.run_id, "interrupted")
    gate.release[head.run_id].set()
    await wait_event(gate.started[last.run_id], what="the run behind the cancelled one started")
    gate.release[last.run_id].set()
    await finish(last)
    assert gate.order == [head.run_id, last.run_id]
    assert skipped.status is RunStatus.interrupted
    await assert_stored_status(store, skipped.run_id, "interrupted")
    await assert_stored_status(store, last.run_id, "success")


async def test_a_waiting_run_cancelled_before_start_is_never_started(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    head = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    waiting = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    await manager.cancel(waiting.run_id)

    manager.start(head.run_id, gate.work(head.run_id))
    manager.start(waiting.run_id, gate.work(waiting.run_id))
    gate.release[head.run_id].set()
    await finish(head)
    await settle()

    assert gate.order == [head.run_id]
    assert waiting.status is RunStatus.interrupted
    await assert_stored_status(store, waiting.run_id, "interrupted")


async def test_an_unknown_strategy_is_a_typed_error_and_writes_nothing() -> None:
    store = CallCountingStore()
    manager = RunManager(store)

    for strategy in ("replace", "", "REJECT", "interrupt "):
        with pytest.raises(UnsupportedStrategyError):
            await manager.create_or_reject("lane-1", multitask_strategy=strategy)

    assert store.writes() == 0
    assert manager.local_run_count == 0
    assert await store.list_by_thread("lane-1") == []


# -- running work -------------------------------------------------------------------


async def test_work_that_returns_ends_in_success(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    seen: list[RunStatus] = []

    async def work(record: RunRecord) -> str:
        seen.append(record.status)
        return "done"

    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, work)
    await finish(run)

    assert seen == [RunStatus.running]
    assert run.status is RunStatus.success
    assert run.error is None
    await assert_stored_status(store, run.run_id, "success")
    assert await manager.has_inflight("lane-1") is False


async def test_work_that_raises_ends_in_error(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()

    async def work(record: RunRecord) -> None:
        raise LookupError("the tool is missing")

    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, work)
    await finish(run)

    assert run.status is RunStatus.error
    assert run.error is not None
    assert "the tool is missing" in run.error
    await assert_stored_status(store, run.run_id, "error")
    row = await stored(store, run.run_id)
    if row is not None:
        assert "the tool is missing" in row["error"]


async def test_a_failed_run_frees_the_lane_for_the_next(
    make_manager: Callable[..., RunManager],
) -> None:
    manager = make_manager()
    gate = GatedWork()
    failing = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    after = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    manager.start(failing.run_id, gate.work(failing.run_id, fail=RuntimeError("bad")))
    manager.start(after.run_id, gate.work(after.run_id))

    gate.release[failing.run_id].set()
    await wait_event(gate.started[after.run_id], what="next run started after a failure")

    assert failing.status is RunStatus.error
    gate.release[after.run_id].set()
    await finish(after)
    assert after.status is RunStatus.success


async def test_the_lease_follows_the_injected_clock(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    clock = FakeClock()
    manager = make_manager(clock=clock, lease_ttl=30, owner_id="proc-a")

    run = await manager.create_or_reject("lane-1")

    expected = clock.now + timedelta(seconds=30)
    assert run.owner_id == "proc-a"
    assert run.lease_expires_at is not None
    assert datetime.fromisoformat(run.lease_expires_at) == expected
    row = await stored(store, run.run_id)
    if store is not None:
        assert row is not None
        assert row["owner_id"] == "proc-a"
        assert datetime.fromisoformat(str(row["lease_expires_at"])) == expected
