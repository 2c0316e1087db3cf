"""Ownership across processes: claims, fencing, cancel requests, pre-emption.

Two managers on one store stand for two processes sharing a database (on
Postgres, really separate connections). A fake clock drives leases; nothing
here sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runlane.runtime import RunManager, RunStatus
from runlane.runtime.runs.schemas import ORPHAN_RECOVERED, CancelAction, RunRecord
from runlane.runtime.runs.store.base import LeaseRenewal, RunStore
from runlane.runtime.runs.store.memory import MemoryRunStore
from tests.runtime.runs._manager_support import (
    STORE_KINDS,
    FakeClock,
    GatedWork,
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


class Hooks:
    """What an executor would do: run claimed runs with gated work, note unstarted ends."""

    def __init__(self, manager: RunManager, gate: GatedWork) -> None:
        self.claimed: list[str] = []
        self.ended_unstarted: list[str] = []
        self._manager = manager
        self._gate = gate
        manager.bind(on_claimed=self.on_claimed, on_unstarted_end=self.on_unstarted_end)

    def on_claimed(self, record: RunRecord) -> None:
        self.claimed.append(record.run_id)
        self._manager.start(record.run_id, self._gate.work(record.run_id))

    async def on_unstarted_end(self, record: RunRecord) -> None:
        self.ended_unstarted.append(record.run_id)


async def _started(gate: GatedWork, run_id: str, what: str) -> None:
    """Wait for work the test did not create itself (a claim creates it)."""
    await wait_for(lambda: run_id in gate.started and gate.started[run_id].is_set(), what=what)


async def _status(store: RunStore, run_id: str) -> str:
    row = await store.get(run_id)
    assert row is not None
    return str(row["status"])


async def test_a_run_queued_on_one_process_runs_where_the_lane_is_freed(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    gate = GatedWork()
    a, b = make_manager(owner_id="a"), make_manager(owner_id="b")
    a_hooks, b_hooks = Hooks(a, gate), Hooks(b, gate)
    head = await a.create_or_reject("t1", multitask_strategy="enqueue")
    a.start(head.run_id, gate.work(head.run_id))
    await wait_event(gate.started[head.run_id], what="head started on a")
    waiting = await b.create_or_reject("t1", multitask_strategy="enqueue")
    assert waiting.queued is True
    await b.dispatch("t1")  # the lane is held: b claims nothing
    assert b_hooks.claimed == []

    gate.release[head.run_id].set()

    await _started(gate, waiting.run_id, "the queued run started on a")
    assert a_hooks.claimed == [waiting.run_id]
    row = await store.get(waiting.run_id)
    assert row is not None
    assert (row["owner_id"], row["status"], row["queued"]) == ("a", "running", False)
    # b let go of its stale record of the run it admitted.
    assert b.local_run_count == 1
    await b.forget_claimed_elsewhere()
    assert b.local_run_count == 0
    assert gate.order == [head.run_id, waiting.run_id]
    gate.release[waiting.run_id].set()


async def test_a_stalled_queue_is_claimed_by_a_sweep(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    # The process that held the lane ended its run and died before claiming.
    await store.put("done", thread_id="t1", status="success", owner_id="dead")
    await store.put("next", thread_id="t1", status="pending", queued=True)
    gate = GatedWork()
    survivor = make_manager(owner_id="survivor")
    hooks = Hooks(survivor, gate)

    assert await survivor.claim_stalled() == 1

    await _started(gate, "next", "the stalled run started")
    assert hooks.claimed == ["next"]
    assert await survivor.claim_stalled() == 0
    gate.release["next"].set()


async def test_a_run_taken_over_elsewhere_is_fenced_and_written_no_more(
    make_manager: Callable[..., RunManager], store: RunStore, clock: FakeClock
) -> None:
    gate = GatedWork()
    paused = make_manager(owner_id="paused")
    Hooks(paused, gate)
    run = await paused.create_or_reject("t1")
    paused.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")
    # The owner stalls past its lease; a peer recovers the run.
    clock.advance(TTL + 1)
    peer = make_manager(owner_id="peer")
    recovered = await peer.reconcile_orphaned_inflight_runs()
    assert [r.run_id for r in recovered] == [run.run_id]

    await paused.renew_leases()

    assert run.fenced is True
    await wait_event(gate.cancelled[run.run_id], what="the fenced run's work was stopped")
    await settle()
    row = await store.get(run.run_id)
    assert row is not None
    # The peer's outcome stands: the fenced owner wrote nothing after it.
    assert (row["status"], row["stop_reason"], row["owner_id"]) == (
        "error",
        ORPHAN_RECOVERED,
        "peer",
    )


async def test_renewal_failing_for_a_whole_ttl_fences_every_run(clock: FakeClock) -> None:
    # A database outage at exactly the renewal is injected (memory store).
    class Unreachable(MemoryRunStore):
        down = False

        async def renew_leases(self, owner_id: str, **lease: Any) -> list[LeaseRenewal]:
            if self.down:
                raise ConnectionResetError("database unreachable")
            return await super().renew_leases(owner_id, **lease)

    store = Unreachable()
    gate = GatedWork()
    elapsed = [0.0]
    manager = RunManager(
        store, owner_id="me", clock=clock, lease_ttl=TTL, monotonic=lambda: elapsed[0]
    )
    run = await manager.create_or_reject("t1")
    manager.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")
    await manager.lease_tick()
    store.down = True

    elapsed[0] = TTL - 1  # failing, but the lease may still hold: keep going
    await manager.lease_tick()
    assert run.fenced is False
    assert manager.counters["lease_renewal_failures"] == 1

    elapsed[0] = TTL  # a whole TTL unconfirmed: peers may be taking over
    await manager.lease_tick()

    assert run.fenced is True
    assert manager.counters["fenced"] == 1
    await wait_event(gate.cancelled[run.run_id], what="work stopped")
    assert await _status(store, run.run_id) == "running"  # nothing written by the fenced owner
    await manager.close()


async def test_a_cancel_requested_on_another_process_reaches_the_owner(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    gate = GatedWork()
    owner, other = make_manager(owner_id="owner"), make_manager(owner_id="other")
    Hooks(owner, gate)
    run = await owner.create_or_reject("t1")
    owner.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    assert await other.cancel(run.run_id, action="rollback") is True
    assert await _status(store, run.run_id) == "running"  # only requested so far
    await owner.apply_cancel_request(run.run_id)  # what the notification triggers

    await wait_event(gate.cancelled[run.run_id], what="the owner stopped the run")
    assert run.abort_action is CancelAction.rollback
    await wait_for(lambda: run.status is RunStatus.interrupted, what="interrupted locally")
    assert await _status(store, run.run_id) == "interrupted"


async def test_a_preempting_run_admitted_elsewhere_stops_the_owner(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    gate = GatedWork()
    owner, other = make_manager(owner_id="owner"), make_manager(owner_id="other")
    Hooks(owner, gate)
    run = await owner.create_or_reject("t1")
    owner.start(run.run_id, gate.work(run.run_id))
    await wait_event(gate.started[run.run_id], what="run started")

    newer = await other.create_or_reject("t1", multitask_strategy="interrupt")
    assert newer.preempted == (run.run_id,)
    await owner.renew_leases()  # the fallback when the notification was missed

    await wait_event(gate.cancelled[run.run_id], what="the owner stopped the pre-empted run")
    assert run.fenced is False  # still the owner's to finish (stream, rollback)
    assert run.abort_action is CancelAction.interrupt
    assert await _status(store, run.run_id) == "interrupted"


async def test_a_queued_run_cancelled_elsewhere_is_finished_by_the_canceller(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    gate = GatedWork()
    a, b = make_manager(owner_id="a"), make_manager(owner_id="b")
    Hooks(a, gate)
    b_hooks = Hooks(b, gate)
    head = await a.create_or_reject("t1")
    a.start(head.run_id, gate.work(head.run_id))
    waiting = await a.create_or_reject("t1", multitask_strategy="enqueue")

    assert await b.cancel(waiting.run_id) is True

    assert await _status(store, waiting.run_id) == "interrupted"
    assert b_hooks.ended_unstarted == [waiting.run_id]  # b ends its stream
    gate.release[head.run_id].set()
    await wait_for(lambda: not head.is_active, what="head ended")
    await a.forget_claimed_elsewhere()
    assert waiting.run_id not in gate.started or not gate.started[waiting.run_id].is_set()


async def test_a_draining_process_admits_and_claims_nothing(
    make_manager: Callable[..., RunManager], store: RunStore
) -> None:
    from runlane.exceptions import ShuttingDownError

    gate = GatedWork()
    manager = make_manager(owner_id="leaving")
    hooks = Hooks(manager, gate)
    head = await manager.create_or_reject("t1")
    manager.start(head.run_id, gate.work(head.run_id))
    waiting = await manager.create_or_reject("t1", multitask_strategy="enqueue")
    await wait_event(gate.started[head.run_id], what="head started")
    manager.draining = True

    with pytest.raises(ShuttingDownError):
        await manager.create_or_reject("t2")
    gate.release[head.run_id].set()
    await wait_for(lambda: not head.is_active, what="head ended")
    await settle()

    assert hooks.claimed == []
    row = await store.get(waiting.run_id)
    assert row is not None
    assert (row["queued"], row["owner_id"]) == (True, None)  # left for a peer
