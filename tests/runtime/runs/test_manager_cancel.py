"""RunManager cancel and terminal statuses: idempotence, first action wins,
cancel before start, and statuses that never change once final.

Work is gated by events (``GatedWork``) as in ``test_manager_lanes.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from runlane.runtime import RunManager, RunStatus
from runlane.runtime.runs.schemas import CancelAction, RunRecord
from runlane.runtime.runs.store.base import RunStore
from tests.runtime.runs._manager_support import (
    LANE_KINDS,
    GatedWork,
    assert_stored_status,
    finish,
    resolve_store_url,
    settle,
    stored,
    wait_event,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LANE_KINDS)
def store_url(request: pytest.FixtureRequest) -> str | None:
    return resolve_store_url(request)


# -- cancel ---------------------------------------------------------------------------


async def test_cancel_before_start_means_the_work_never_runs(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    run = await manager.create_or_reject("lane-1")

    assert await manager.cancel(run.run_id) is True
    manager.start(run.run_id, gate.work(run.run_id))
    await finish(run)
    await settle()

    assert gate.order == []
    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")


async def test_cancel_right_after_start_means_the_work_never_runs_and_frees_the_lane(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    # start() has created the task but the loop has not run it yet.
    manager = make_manager(eviction_delay=0)
    gate = GatedWork()
    run = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    behind = await manager.create_or_reject("lane-1", multitask_strategy="enqueue")
    manager.start(run.run_id, gate.work(run.run_id))
    manager.start(behind.run_id, gate.work(behind.run_id))

    assert await manager.cancel(run.run_id) is True

    await wait_event(gate.started[behind.run_id], what="the next run took the freed lane")
    assert gate.order == [behind.run_id]
    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")
    gate.release[behind.run_id].set()
    await finish(behind)
    await settle()
    assert manager.local_run_count == 0


async def test_cancel_stops_running_work(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    assert await manager.cancel(run.run_id) is True

    await wait_event(gate.cancelled[run.run_id], what="work cancelled")
    await finish(run)
    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")
    assert await manager.has_inflight("lane-1") is False


async def test_cancel_is_idempotent_and_the_first_action_wins(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    gate = GatedWork()
    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    assert await manager.cancel(run.run_id, action="interrupt") is True
    assert await manager.cancel(run.run_id, action="rollback") is True
    assert await manager.cancel(run.run_id, action=CancelAction.rollback) is True

    await finish(run)
    assert run.cancel_action is CancelAction.interrupt
    assert run.status is RunStatus.interrupted
    row = await stored(store, run.run_id)
    if store is not None:
        assert row is not None
        assert row["cancel_action"] == "interrupt"
        assert row["status"] == "interrupted"


async def test_a_first_rollback_is_not_replaced_by_a_later_interrupt(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("lane-1")
    await manager.set_status(run.run_id, RunStatus.running)

    await manager.cancel(run.run_id, action="rollback")
    await manager.cancel(run.run_id, action="interrupt")

    assert run.cancel_action is CancelAction.rollback
    row = await stored(store, run.run_id)
    if store is not None:
        assert row is not None
        assert row["cancel_action"] == "rollback"


async def test_a_terminal_status_is_never_overwritten(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("lane-1")
    await manager.set_status(run.run_id, RunStatus.running)
    assert await manager.set_status(run.run_id, RunStatus.success) is True

    for late in (
        RunStatus.error,
        RunStatus.interrupted,
        RunStatus.running,
        RunStatus.pending,
        RunStatus.timeout,
    ):
        assert await manager.set_status(run.run_id, late) is False
        assert run.status is RunStatus.success
    assert await manager.cancel(run.run_id) is False

    assert run.status is RunStatus.success
    await assert_stored_status(store, run.run_id, "success")


async def test_an_interrupted_run_stays_interrupted(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    run = await manager.create_or_reject("lane-1")
    await manager.cancel(run.run_id)

    assert await manager.set_status(run.run_id, RunStatus.success) is False
    assert await manager.set_status(run.run_id, RunStatus.running) is False

    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")


async def test_work_that_ignores_the_cancel_still_ends_interrupted(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    manager = make_manager()
    entered = asyncio.Event()
    swallowed = asyncio.Event()

    async def stubborn(record: RunRecord) -> str:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        return "finished anyway"

    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, stubborn)
    await wait_event(entered, what="work entered")

    assert await manager.cancel(run.run_id) is True
    await wait_event(swallowed, what="work saw the cancel")
    await finish(run)

    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")


async def test_a_run_cancelled_from_inside_its_own_work_is_stored_interrupted(
    make_manager: Callable[..., RunManager], store: RunStore | None
) -> None:
    # E.g. a tool that calls the cancel API in-process for the run it belongs to.
    manager = make_manager()

    async def work(record: RunRecord) -> None:
        await manager.cancel(record.run_id)

    run = await manager.create_or_reject("lane-1")
    manager.start(run.run_id, work)
    await finish(run)

    assert run.status is RunStatus.interrupted
    await assert_stored_status(store, run.run_id, "interrupted")
    assert await manager.has_inflight("lane-1") is False
