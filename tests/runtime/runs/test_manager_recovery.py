"""RunManager across processes: orphan reconciliation, leases, durable cancel, eviction.

Lease time comes from the manager's ``clock=`` (a ``FakeClock`` the test
moves), never from sleeping. Rows "left by a dead process" are written
straight into the store with that process's owner id and lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from runlane.runtime import RunManager, RunStatus
from runlane.runtime.runs.schemas import ORPHAN_RECOVERED, CancelAction, RunRecord
from runlane.runtime.runs.store.base import RunStore
from runlane.runtime.runs.store.memory import MemoryRunStore
from tests.runtime.runs._manager_support import (
    STORE_KINDS,
    FakeClock,
    GatedWork,
    finish,
    iso,
    resolve_store_url,
    settle,
    wait_event,
    wait_for,
)

pytestmark = pytest.mark.anyio

TTL = 30.0


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest) -> str | None:
    return resolve_store_url(request)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager_options(clock: FakeClock) -> dict[str, Any]:
    return {"clock": clock, "lease_ttl": TTL}


async def _row(store: RunStore, run_id: str) -> dict[str, Any]:
    row = await store.get(run_id)
    assert row is not None, f"row {run_id} is missing"
    return row


async def _leave_behind(
    store: RunStore,
    run_id: str,
    thread_id: str,
    *,
    status: str = "running",
    owner: str | None = "dead-process",
    lease_until: datetime | None = None,
    **fields: Any,
) -> None:
    """A row as a crashed process would leave it."""
    await store.put(
        run_id,
        thread_id=thread_id,
        status=status,
        owner_id=owner,
        lease_expires_at=iso(lease_until) if lease_until is not None else None,
        **fields,
    )


# -- orphan reconciliation ------------------------------------------------------------


async def test_runs_of_a_dead_owner_end_as_recovered_errors(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    lapsed = clock.now - timedelta(seconds=5)
    await _leave_behind(store, "was-running", "conv-1", lease_until=lapsed)
    await _leave_behind(store, "was-pending", "conv-2", status="pending", lease_until=lapsed)
    await _leave_behind(store, "never-leased", "conv-3", owner=None)
    await _leave_behind(store, "finished", "conv-4", status="success", lease_until=lapsed)
    manager = make_manager(owner_id="successor")

    recovered = await manager.reconcile_orphaned_inflight_runs(error="owner went away")

    assert {r.run_id for r in recovered} == {"was-running", "was-pending", "never-leased"}
    for record in recovered:
        assert record.status is RunStatus.error
        assert record.error == "owner went away"
        assert record.stop_reason == ORPHAN_RECOVERED
        row = await _row(store, record.run_id)
        assert (row["status"], row["error"], row["stop_reason"]) == (
            "error",
            "owner went away",
            ORPHAN_RECOVERED,
        )
    assert (await _row(store, "finished"))["status"] == "success"
    assert (await _row(store, "finished"))["stop_reason"] is None


async def test_a_run_whose_owner_still_holds_its_lease_is_left_alone(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    await _leave_behind(
        store,
        "alive",
        "conv-1",
        owner="busy-process",
        lease_until=clock.now + timedelta(seconds=20),
    )
    await _leave_behind(store, "dead", "conv-2", lease_until=clock.now - timedelta(seconds=1))
    manager = make_manager(owner_id="successor")

    recovered = await manager.reconcile_orphaned_inflight_runs()

    assert [r.run_id for r in recovered] == ["dead"]
    alive = await _row(store, "alive")
    assert (alive["status"], alive["owner_id"], alive["stop_reason"]) == (
        "running",
        "busy-process",
        None,
    )

    # The owner stops renewing; once its lease has run out the run is an orphan.
    clock.advance(21)
    recovered = await manager.reconcile_orphaned_inflight_runs()

    assert [r.run_id for r in recovered] == ["alive"]
    alive = await _row(store, "alive")
    assert (alive["status"], alive["stop_reason"]) == ("error", ORPHAN_RECOVERED)


async def test_a_lease_renewed_in_time_keeps_the_run_alive(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    owner = make_manager(owner_id="owner")
    run = await owner.create_or_reject("conv-1")
    await owner.set_status(run.run_id, RunStatus.running)
    successor = make_manager(owner_id="successor")

    clock.advance(TTL - 1)
    await owner.renew_leases()
    clock.advance(TTL - 1)
    recovered = await successor.reconcile_orphaned_inflight_runs()

    assert recovered == []
    assert (await _row(store, run.run_id))["status"] == "running"
    assert datetime.fromisoformat(str((await _row(store, run.run_id))["lease_expires_at"])) > (
        clock.now
    )

    clock.advance(2)
    recovered = await successor.reconcile_orphaned_inflight_runs()
    assert [r.run_id for r in recovered] == [run.run_id]


async def test_a_sole_process_ignores_leases(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    await _leave_behind(
        store, "leased", "conv-1", owner="previous-me", lease_until=clock.now + timedelta(hours=1)
    )
    manager = make_manager(owner_id="restarted")

    assert await manager.reconcile_orphaned_inflight_runs() == []
    recovered = await manager.reconcile_orphaned_inflight_runs(sole_process=True)

    assert [r.run_id for r in recovered] == ["leased"]
    row = await _row(store, "leased")
    assert (row["status"], row["stop_reason"]) == ("error", ORPHAN_RECOVERED)


async def test_live_local_runs_are_never_reconciled(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    manager = make_manager()
    gate = GatedWork()
    running = await manager.create_or_reject("conv-1")
    manager.start(running.run_id, gate.work(running.run_id))
    await wait_event(gate.started[running.run_id], what="run started")
    by_hand = await manager.create_or_reject("conv-2")
    await manager.set_status(by_hand.run_id, RunStatus.running)
    clock.advance(TTL * 10)  # even with every lease lapsed

    recovered = await manager.reconcile_orphaned_inflight_runs(sole_process=True)

    assert recovered == []
    assert (await _row(store, running.run_id))["status"] == "running"
    assert (await _row(store, by_hand.run_id))["status"] == "running"
    assert running.status is RunStatus.running
    gate.release[running.run_id].set()
    await finish(running)
    assert running.status is RunStatus.success


async def test_reconciliation_only_looks_before_the_cutoff(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    await _leave_behind(store, "old", "conv-1", created_at="2026-01-01T00:00:00+00:00")
    await _leave_behind(store, "new", "conv-2", created_at="2026-01-01T00:10:00+00:00")
    manager = make_manager()

    recovered = await manager.reconcile_orphaned_inflight_runs(before="2026-01-01T00:05:00+00:00")

    assert [r.run_id for r in recovered] == ["old"]
    assert (await _row(store, "new"))["status"] == "running"


async def test_a_local_run_queued_behind_an_orphan_starts_once_it_is_recovered(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    await _leave_behind(store, "stuck-head", "conv-1", lease_until=clock.now - timedelta(seconds=1))
    manager = make_manager(owner_id="me")
    gate = GatedWork()
    waiting = await manager.create_or_reject("conv-1", multitask_strategy="enqueue")
    assert waiting.queued is True
    manager.start(waiting.run_id, gate.work(waiting.run_id))
    await settle()
    assert gate.order == []

    recovered = await manager.reconcile_orphaned_inflight_runs()

    assert [r.run_id for r in recovered] == ["stuck-head"]
    await wait_event(gate.started[waiting.run_id], what="queued run started after recovery")
    assert (await _row(store, waiting.run_id))["status"] == "running"
    gate.release[waiting.run_id].set()
    await finish(waiting)
    assert waiting.status is RunStatus.success
    assert (await _row(store, waiting.run_id))["status"] == "success"


async def test_a_queued_run_of_a_dead_process_is_claimed_not_ended(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    # The run behind never started, so it had no side effects: the recovering
    # process runs it instead of failing it.
    lapsed = clock.now - timedelta(seconds=1)
    await _leave_behind(
        store, "head", "conv-1", lease_until=lapsed, created_at="2026-01-01T00:00:00+00:00"
    )
    await _leave_behind(
        store,
        "behind",
        "conv-1",
        status="pending",
        queued=True,
        lease_until=None,
        created_at="2026-01-01T00:00:01+00:00",
    )
    manager = make_manager()
    gate = GatedWork()
    claimed: list[str] = []

    async def unstarted(record: RunRecord) -> None:
        raise AssertionError(f"{record.run_id} must not end unstarted")

    def on_claimed(record: RunRecord) -> None:
        claimed.append(record.run_id)
        manager.start(record.run_id, gate.work(record.run_id))

    manager.bind(on_claimed=on_claimed, on_unstarted_end=unstarted)

    recovered = await manager.reconcile_orphaned_inflight_runs()

    assert [r.run_id for r in recovered] == ["head"]
    head = await _row(store, "head")
    assert (head["status"], head["stop_reason"]) == ("error", ORPHAN_RECOVERED)
    assert claimed == ["behind"]
    await wait_event(gate.started["behind"], what="the queued run started here")
    behind = await _row(store, "behind")
    assert (behind["status"], behind["queued"], behind["owner_id"]) == (
        "running",
        False,
        manager.owner_id,
    )
    gate.release["behind"].set()
    await manager.close()


async def test_a_failed_error_write_is_not_reported_as_recovered() -> None:
    class RefusesErrors(MemoryRunStore):
        async def update_status(
            self, run_id: str, status: str, *, error: str | None = None
        ) -> bool:
            if status == "error":
                raise ValueError("constraint says no")
            return await super().update_status(run_id, status, error=error)

    store = RefusesErrors()
    await store.put("orphan", thread_id="conv-1", status="running")
    manager = RunManager(store)

    assert await manager.reconcile_orphaned_inflight_runs() == []
    assert (await _row(store, "orphan"))["status"] == "running"


# -- leases and durable cancel --------------------------------------------------------


async def test_renewing_applies_a_cancel_requested_in_the_store(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    manager = make_manager(owner_id="owner")
    gate = GatedWork()
    run = await manager.create_or_reject("conv-1")
    manager.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    # Another process asks for the cancel; only the store knows about it.
    assert await store.request_cancel(run.run_id, CancelAction.rollback, now=clock()) is (
        CancelAction.rollback
    )
    await settle()
    assert run.status is RunStatus.running

    clock.advance(5)
    await manager.renew_leases()

    await wait_event(gate.cancelled[run.run_id], what="work cancelled by the durable request")
    await finish(run)
    assert run.status is RunStatus.interrupted
    assert run.cancel_action is CancelAction.rollback
    row = await _row(store, run.run_id)
    assert (row["status"], row["cancel_action"]) == ("interrupted", "rollback")


async def test_a_cancel_from_another_manager_reaches_the_owner(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    owner = make_manager(owner_id="owner")
    other = make_manager(owner_id="other")
    gate = GatedWork()
    run = await owner.create_or_reject("conv-1")
    owner.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    assert await other.cancel(run.run_id) is True
    await owner.renew_leases()

    await wait_event(gate.cancelled[run.run_id], what="owner's work cancelled")
    await finish(run)
    assert run.status is RunStatus.interrupted
    assert (await _row(store, run.run_id))["status"] == "interrupted"


async def test_the_first_cancel_wins_across_processes(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    owner = make_manager(owner_id="owner")
    other = make_manager(owner_id="other")
    gate = GatedWork()
    run = await owner.create_or_reject("conv-1")
    owner.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    # The remote rollback is recorded first; the owner's own interrupt comes second.
    assert await other.cancel(run.run_id, action="rollback") is True
    assert await owner.cancel(run.run_id, action="interrupt") is True

    await finish(run)
    assert run.cancel_action is CancelAction.rollback
    row = await _row(store, run.run_id)
    assert (row["status"], row["cancel_action"]) == ("interrupted", "rollback")
    # And a later remote cancel changes nothing either.
    assert await other.cancel(run.run_id, action="interrupt") is True
    assert (await _row(store, run.run_id))["cancel_action"] == "rollback"


async def test_renewing_moves_the_lease_of_active_runs_only(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    manager = make_manager(owner_id="owner")
    active = await manager.create_or_reject("conv-1")
    await manager.set_status(active.run_id, RunStatus.running)
    done = await manager.create_or_reject("conv-2")
    await manager.set_status(done.run_id, RunStatus.success)
    done_lease = (await _row(store, done.run_id))["lease_expires_at"]

    clock.advance(100)
    await manager.renew_leases()

    lease = datetime.fromisoformat(str((await _row(store, active.run_id))["lease_expires_at"]))
    assert lease == clock.now + timedelta(seconds=TTL)
    assert (await _row(store, done.run_id))["lease_expires_at"] == done_lease


# -- eviction: bounded memory ------------------------------------------------------------


async def test_ten_thousand_runs_leave_no_local_records_behind() -> None:
    store = MemoryRunStore()
    manager = RunManager(store, eviction_delay=0)
    completed = 0

    async def work(record: RunRecord) -> None:
        nonlocal completed
        completed += 1

    for n in range(10_000):
        run = await manager.create_or_reject(f"bulk-{n % 100}", multitask_strategy="enqueue")
        manager.start(run.run_id, work)
        if n % 100 == 99:
            await asyncio.sleep(0)
    await wait_for(lambda: manager.local_run_count == 0, what="every record evicted")

    assert completed == 10_000
    assert manager.local_run_count == 0
    statuses: dict[str, int] = {}
    for t in range(100):
        for row in await store.list_by_thread(f"bulk-{t}", limit=1_000):
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    assert statuses == {"success": 10_000}
    await manager.close()


async def test_cancelled_failed_and_preempted_runs_are_evicted_too() -> None:
    manager = RunManager(MemoryRunStore(), eviction_delay=0)
    gate = GatedWork()
    failing = await manager.create_or_reject("conv-1")
    manager.start(failing.run_id, gate.work(failing.run_id, fail=RuntimeError("x")))
    gate.release[failing.run_id].set()
    victim = await manager.create_or_reject("conv-2")
    manager.start(victim.run_id, gate.work(victim.run_id))
    await wait_event(gate.started[victim.run_id], what="victim started")
    winner = await manager.create_or_reject("conv-2", multitask_strategy="interrupt")
    never = await manager.create_or_reject("conv-3")
    await manager.cancel(never.run_id)
    manager.start(winner.run_id, gate.work(winner.run_id))
    gate.release[winner.run_id].set()

    await wait_for(lambda: manager.local_run_count == 0, what="every record evicted")

    assert failing.status is RunStatus.error
    assert victim.status is RunStatus.interrupted
    assert winner.status is RunStatus.success
    assert never.status is RunStatus.interrupted
    await manager.close()


async def test_an_ended_run_stays_readable_until_the_eviction_delay_passes() -> None:
    delay = 0.05
    loop = asyncio.get_running_loop()
    manager = RunManager(MemoryRunStore(), eviction_delay=delay)
    ended_at: list[float] = []

    async def work(record: RunRecord) -> None:
        ended_at.append(loop.time())

    run = await manager.create_or_reject("conv-1")
    manager.start(run.run_id, work)
    await finish(run)
    await settle()

    # Ended, but within the delay: the local record (with its controls) is still served.
    assert run.status is RunStatus.success
    assert manager.local_run_count == 1
    assert await manager.get(run.run_id) is run

    await wait_for(lambda: manager.local_run_count == 0, what="record evicted after the delay")

    assert loop.time() - ended_at[0] >= delay - 0.005
    fetched = await manager.get(run.run_id)
    assert fetched is not None
    assert fetched is not run
    assert fetched.store_only is True
    assert fetched.status is RunStatus.success
    await manager.close()


async def test_a_long_eviction_delay_keeps_the_record_until_close() -> None:
    manager = RunManager(MemoryRunStore(), eviction_delay=3600)
    run = await manager.create_or_reject("conv-1")

    async def work(record: RunRecord) -> None:
        return None

    manager.start(run.run_id, work)
    await finish(run)
    await settle(200)

    assert manager.local_run_count == 1
    assert await manager.get(run.run_id) is run
    await manager.close()
    assert manager.local_run_count == 0
