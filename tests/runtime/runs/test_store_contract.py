"""One contract, three stores: every RunStore guarantee on memory, SQLite and Postgres.

Each test runs against ``MemoryRunStore``, ``SqlRunStore`` on a fresh SQLite
file and ``SqlRunStore`` on a fresh Postgres database. A guarantee that holds
on one backend and not another fails here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runlane.db.engine import create_engine
from runlane.exceptions import ConflictError, InvalidPayloadError
from runlane.runtime.runs.schemas import (
    ORPHAN_RECOVERED,
    CancelAction,
    MultitaskStrategy,
    RunStatus,
    can_transition,
)
from runlane.runtime.runs.store.base import ROW_FIELDS, Admission, LeaseRenewal, RunStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TIME_FIELDS = ("lease_expires_at", "cancel_requested_at", "created_at", "updated_at")


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    # Resolved synchronously: the URL fixtures run their own event loops.
    if request.param == "memory":
        return "memory", None
    return request.param, request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def store(backend: tuple[str, str | None]) -> AsyncIterator[RunStore]:
    _name, url = backend
    if url is None:
        from runlane.runtime.runs.store.memory import MemoryRunStore

        yield MemoryRunStore()
        return
    from runlane.runtime.runs.store.sql import SqlRunStore

    sql_store = SqlRunStore(create_engine(url), owns_engine=True)
    try:
        yield sql_store
    finally:
        await sql_store.close()


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def instant(value: str | None) -> datetime | None:
    """Parse an ISO timestamp, insisting that it carries an offset."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"timestamp without offset: {value!r}"
    return parsed


async def ids(store: RunStore, thread_id: str, **filters: Any) -> list[str]:
    return [row["run_id"] for row in await store.list_by_thread(thread_id, **filters)]


async def status_of(store: RunStore, run_id: str) -> str | None:
    row = await store.get(run_id)
    return None if row is None else row["status"]


# --- rows: put, get, list, delete -------------------------------------------


async def test_put_get_round_trips_every_field(store: RunStore) -> None:
    fields: dict[str, Any] = {
        "assistant_id": "agent",
        "user_id": "alice",
        "status": "running",
        "on_disconnect": "continue",
        "multitask_strategy": "enqueue",
        "metadata": {"k": [1, 2.5, None, True], "nested": {"s": "é"}},
        "kwargs": {"input": {"messages": []}, "config": {"recursion_limit": 5}},
        "model_name": "gpt-x",
        "error": "boom",
        "stop_reason": "loop_capped",
        "queued": False,
        "owner_id": "worker-1",
        "lease_expires_at": "2026-01-02T03:04:05.123456+00:00",
        "cancel_action": "rollback",
        # A non-UTC offset: the instant must survive, whatever the rendering.
        "cancel_requested_at": "2026-01-02T05:04:05.5+02:00",
        "total_input_tokens": 11,
        "total_output_tokens": 22,
        "total_tokens": 33,
        "llm_call_count": 4,
        "lead_agent_tokens": 5,
        "subagent_tokens": 6,
        "middleware_tokens": 7,
        "token_usage_by_model": {"gpt-x": {"input": 11, "output": 22}},
        "message_count": 8,
        "first_human_message": "hi",
        "last_ai_message": "bye",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:01.25+00:00",
    }
    assert set(fields) | {"run_id", "thread_id"} == set(ROW_FIELDS)
    await store.put("run-1", thread_id="thread-1", **fields)

    row = await store.get("run-1")

    assert row is not None
    assert list(row) == list(ROW_FIELDS)
    assert row["run_id"] == "run-1"
    assert row["thread_id"] == "thread-1"
    for name, value in fields.items():
        if name in TIME_FIELDS:
            assert instant(row[name]) == instant(value), name
        else:
            assert row[name] == value, name


async def test_put_fills_defaults(store: RunStore) -> None:
    before = datetime.now(UTC)
    await store.put("run-1", thread_id="thread-1")

    row = await store.get("run-1")

    assert row is not None
    assert row["status"] == "pending"
    assert row["queued"] is False
    assert row["metadata"] == {}
    assert row["kwargs"] == {}
    assert row["token_usage_by_model"] == {}
    assert row["total_tokens"] == 0
    assert row["message_count"] == 0
    assert row["lease_expires_at"] is None
    assert row["cancel_action"] is None
    created = instant(row["created_at"])
    assert created is not None
    assert before <= created <= datetime.now(UTC)
    assert instant(row["updated_at"]) == created


async def test_put_is_an_upsert(store: RunStore) -> None:
    await store.put(
        "run-1", thread_id="thread-1", status="running", model_name="a", created_at=at(0)
    )
    await store.put("run-1", thread_id="thread-1", status="success", created_at=at(0))

    row = await store.get("run-1")

    assert row is not None
    assert (row["status"], row["model_name"]) == ("success", None)
    assert await ids(store, "thread-1") == ["run-1"]


async def test_put_rejects_unknown_fields_and_writes_nothing(store: RunStore) -> None:
    with pytest.raises(TypeError, match="bogus"):
        await store.put("run-1", thread_id="thread-1", bogus=1)
    assert await store.get("run-1") is None


async def test_get_missing_and_user_scoped(store: RunStore) -> None:
    await store.put("run-1", thread_id="thread-1", user_id="alice")

    assert await store.get("nope") is None
    assert await store.get("run-1", user_id="bob") is None
    alice = await store.get("run-1", user_id="alice")
    unscoped = await store.get("run-1")
    assert alice is not None
    assert unscoped is not None
    assert alice["user_id"] == unscoped["user_id"] == "alice"


async def test_list_is_newest_first_with_insertion_order_on_ties(store: RunStore) -> None:
    await store.put("a", thread_id="thread-1", status="success", created_at=at(0))
    await store.put("b", thread_id="thread-1", status="success", created_at=at(5))
    await store.put("c", thread_id="thread-1", status="success", created_at=at(5))
    await store.put("d", thread_id="thread-1", status="success", created_at=at(0))
    await store.put("e", thread_id="thread-1", status="success", created_at=at(3))
    await store.put("other", thread_id="thread-2", status="success", created_at=at(9))

    assert await ids(store, "thread-1") == ["b", "c", "e", "a", "d"]


async def test_list_filters_status_user_limit_offset(store: RunStore) -> None:
    for i, (status, user) in enumerate(
        [("success", "alice"), ("error", "bob"), ("success", "bob"), ("success", "alice")]
    ):
        await store.put(
            f"r{i}", thread_id="thread-1", status=status, user_id=user, created_at=at(i)
        )

    assert await ids(store, "thread-1", status="success") == ["r3", "r2", "r0"]
    assert await ids(store, "thread-1", user_id="alice") == ["r3", "r0"]
    assert await ids(store, "thread-1", user_id="bob", status="success") == ["r2"]
    assert await ids(store, "thread-1", limit=2) == ["r3", "r2"]
    assert await ids(store, "thread-1", limit=2, offset=1) == ["r2", "r1"]
    assert await ids(store, "thread-1", offset=4) == []
    assert await ids(store, "nobody") == []


async def test_delete(store: RunStore) -> None:
    await store.put("run-1", thread_id="thread-1")

    assert await store.delete("run-1") is True
    assert await store.get("run-1") is None
    assert await store.delete("run-1") is False


# --- guarded status writes ---------------------------------------------------


async def test_update_status_follows_can_transition_for_every_pair(store: RunStore) -> None:
    pairs = list(itertools.product(RunStatus, RunStatus))
    for i, (current, _new) in enumerate(pairs):
        # One thread per row: two active rows on one thread would share a lane.
        await store.put(f"r{i}", thread_id=f"t{i}", status=current.value)

    for i, (current, new) in enumerate(pairs):
        expected = can_transition(current, new)
        assert await store.update_status(f"r{i}", new.value) is expected, (current, new)
        assert await status_of(store, f"r{i}") == (new if expected else current).value


async def test_update_status_writes_error_and_refuses_missing_rows(store: RunStore) -> None:
    await store.put("run-1", thread_id="thread-1", status="running")

    assert await store.update_status("run-1", "error", error="boom") is True
    assert await store.update_status("run-1", "success") is False
    assert await store.update_status("missing", "success") is False

    row = await store.get("run-1")
    assert row is not None
    assert (row["status"], row["error"]) == ("error", "boom")


async def test_update_status_does_not_run_a_queued_run(store: RunStore) -> None:
    await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.admit("waiter", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)

    assert await store.update_status("waiter", "running") is False
    assert await status_of(store, "waiter") == "pending"


async def test_update_run_completion_writes_stats_once(store: RunStore) -> None:
    await store.put("run-1", thread_id="thread-1", status="running")

    written = await store.update_run_completion(
        "run-1",
        status="success",
        total_tokens=42,
        llm_call_count=2,
        token_usage_by_model={"m": {"total": 42}},
        last_ai_message="done",
        stop_reason="token_capped",
    )
    late = await store.update_run_completion("run-1", status="error", total_tokens=1, error="late")

    assert (written, late) == (True, False)
    row = await store.get("run-1")
    assert row is not None
    assert row["status"] == "success"
    assert (row["total_tokens"], row["llm_call_count"]) == (42, 2)
    assert row["token_usage_by_model"] == {"m": {"total": 42}}
    assert (row["last_ai_message"], row["stop_reason"], row["error"]) == (
        "done",
        "token_capped",
        None,
    )


async def test_update_run_completion_same_status_missing_row_and_interrupted(
    store: RunStore,
) -> None:
    await store.put("done", thread_id="t1", status="success")
    await store.put("stopped", thread_id="t2", status="interrupted")

    assert await store.update_run_completion("done", status="success", message_count=3) is True
    assert await store.update_run_completion("missing", status="success") is False
    # interrupted is terminal: can_transition refuses error, so no stats land.
    expected = can_transition("interrupted", "error")
    assert await store.update_run_completion("stopped", status="error", total_tokens=5) is expected
    stopped = await store.get("stopped")
    done = await store.get("done")
    assert stopped is not None
    assert done is not None
    assert (stopped["status"], stopped["total_tokens"]) == ("interrupted", 0)
    assert done["message_count"] == 3


# --- admission and the lane --------------------------------------------------


async def test_admit_reject_conflict_writes_nothing(store: RunStore) -> None:
    first = await store.admit("first", thread_id="thread-1", strategy=MultitaskStrategy.reject)

    with pytest.raises(ConflictError):
        await store.admit("second", thread_id="thread-1", strategy=MultitaskStrategy.reject)

    assert first == Admission(queued=False, preempted=())
    assert await store.get("second") is None
    assert await ids(store, "thread-1") == ["first"]
    row = await store.get("first")
    assert row is not None
    assert (row["status"], row["queued"]) == ("pending", False)


async def test_admit_reject_succeeds_once_the_thread_is_idle(store: RunStore) -> None:
    await store.admit("first", thread_id="thread-1", strategy=MultitaskStrategy.reject)
    await store.update_status("first", "success")

    second = await store.admit("second", thread_id="thread-1", strategy=MultitaskStrategy.reject)

    assert second.queued is False
    assert await store.has_active("thread-1") is True


async def test_admit_enqueue_queues_behind_the_holder(store: RunStore) -> None:
    holder = await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    waiter = await store.admit(
        "waiter", thread_id="thread-1", strategy=MultitaskStrategy.enqueue, user_id="alice"
    )

    assert (holder.queued, waiter.queued) == (False, True)
    row = await store.get("waiter")
    assert row is not None
    assert (row["status"], row["queued"], row["user_id"]) == ("pending", True, "alice")


@pytest.mark.parametrize("strategy", [MultitaskStrategy.interrupt, MultitaskStrategy.rollback])
async def test_admit_preempting_strategies_end_every_active_run(
    store: RunStore, strategy: MultitaskStrategy
) -> None:
    await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.start_run("holder")
    await store.admit("waiter", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.put("old", thread_id="thread-1", status="success")
    await store.admit("elsewhere", thread_id="thread-2", strategy=MultitaskStrategy.reject)

    admission = await store.admit("new", thread_id="thread-1", strategy=strategy)

    assert admission == Admission(queued=False, preempted=("holder", "waiter"))
    for run_id in ("holder", "waiter"):
        row = await store.get(run_id)
        assert row is not None
        assert (row["status"], row["cancel_action"]) == ("interrupted", strategy.value)
        assert row["error"]
        assert instant(row["cancel_requested_at"]) is not None
    new = await store.get("new")
    assert new is not None
    assert (new["status"], new["queued"]) == ("pending", False)
    assert await status_of(store, "old") == "success"
    assert await status_of(store, "elsewhere") == "pending"


async def test_admit_preemption_keeps_an_earlier_cancel_action(store: RunStore) -> None:
    await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.reject)
    await store.request_cancel("holder", CancelAction.rollback, now=NOW)

    await store.admit("new", thread_id="thread-1", strategy=MultitaskStrategy.interrupt)

    row = await store.get("holder")
    assert row is not None
    assert (row["status"], row["cancel_action"]) == ("interrupted", "rollback")
    assert instant(row["cancel_requested_at"]) == NOW


async def test_admit_unknown_strategy_writes_nothing(store: RunStore) -> None:
    with pytest.raises(ValueError, match=r"(?i)strategy"):
        await store.admit("run-1", thread_id="thread-1", strategy="shove")  # type: ignore[arg-type]
    assert await store.get("run-1") is None


TTL = timedelta(seconds=30)


async def _claim(store: RunStore, thread_id: str, owner: str = "me") -> str | None:
    row = await store.claim_next(thread_id, owner_id=owner, ttl=TTL, now=NOW)
    return None if row is None else str(row["run_id"])


async def test_claim_next_starts_waiters_in_creation_order(store: RunStore) -> None:
    for run_id in ("holder", "w1", "w2"):
        await store.admit(run_id, thread_id="thread-1", strategy=MultitaskStrategy.enqueue)

    assert await _claim(store, "thread-1") is None  # the lane is held
    await store.update_status("holder", "success")
    assert await _claim(store, "thread-1") == "w1"
    assert await _claim(store, "thread-1") is None  # w1 holds it now
    assert await store.start_run("w2") is False
    assert await store.start_run("w1") is True
    await store.update_status("w1", "error")
    assert await _claim(store, "thread-1", owner="you") == "w2"
    await store.update_status("w2", "interrupted")
    assert await _claim(store, "thread-1") is None  # nothing waits
    assert await _claim(store, "empty-thread") is None


async def test_claim_next_makes_the_claimer_owner_with_a_lease(store: RunStore) -> None:
    await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.admit("waiter", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    waiting = await store.get("waiter")
    assert waiting is not None
    # A queued run belongs to nobody: it outlives the process that admitted it.
    assert (waiting["queued"], waiting["owner_id"], waiting["lease_expires_at"]) == (
        True,
        None,
        None,
    )
    await store.update_status("holder", "success")

    row = await store.claim_next("thread-1", owner_id="me", ttl=TTL, now=NOW)

    assert row is not None
    assert (row["run_id"], row["queued"], row["owner_id"], row["status"]) == (
        "waiter",
        False,
        "me",
        "pending",
    )
    assert instant(row["lease_expires_at"]) == NOW + TTL
    assert row == await store.get("waiter")


async def test_claim_next_skips_waiters_that_ended(store: RunStore) -> None:
    for run_id in ("holder", "w1", "w2"):
        await store.admit(run_id, thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.update_status("w1", "interrupted")  # cancelled while waiting
    await store.update_status("holder", "success")

    assert await _claim(store, "thread-1") == "w2"
    assert await status_of(store, "w1") == "interrupted"


async def test_claim_stalled_takes_the_oldest_waiter_of_each_free_lane(store: RunStore) -> None:
    # busy: its holder runs, so its waiter is not stalled.
    await store.admit("busy-holder", thread_id="busy", strategy=MultitaskStrategy.enqueue)
    await store.admit("busy-waiter", thread_id="busy", strategy=MultitaskStrategy.enqueue)
    # a and b: the holder ended and nobody claimed the next run.
    for thread_id in ("a", "b"):
        for n in range(3):
            await store.admit(f"{thread_id}{n}", thread_id=thread_id, strategy="enqueue")
        await store.update_status(f"{thread_id}0", "success")

    first = await store.claim_stalled(owner_id="me", ttl=TTL, now=NOW, limit=1)
    rest = await store.claim_stalled(owner_id="you", ttl=TTL, now=NOW)

    assert [row["run_id"] for row in first] == ["a1"]
    assert [row["run_id"] for row in rest] == ["b1"]
    assert (first[0]["owner_id"], rest[0]["owner_id"]) == ("me", "you")
    assert await store.claim_stalled(owner_id="me", ttl=TTL, now=NOW) == []
    for run_id in ("busy-waiter", "a2", "b2"):
        row = await store.get(run_id)
        assert row is not None
        assert (row["queued"], row["owner_id"]) == (True, None)


async def test_concurrent_claims_never_share_a_run(store: RunStore) -> None:
    for n in range(3):
        await store.admit(f"r{n}", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.update_status("r0", "success")

    async def by_thread(owner: str) -> list[str]:
        row = await store.claim_next("thread-1", owner_id=owner, ttl=TTL, now=NOW)
        return [] if row is None else [row["run_id"]]

    async def by_sweep(owner: str) -> list[str]:
        return [row["run_id"] for row in await store.claim_stalled(owner_id=owner, ttl=TTL)]

    results = await asyncio.gather(
        *(by_thread(f"t{n}") for n in range(10)), *(by_sweep(f"s{n}") for n in range(10))
    )

    claimed = [run_id for result in results for run_id in result]
    assert claimed == ["r1"]
    row = await store.get("r2")
    assert row is not None
    assert row["queued"] is True


async def test_start_run_only_for_a_pending_lane_holder(store: RunStore) -> None:
    await store.admit("holder", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.admit("waiter", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
    await store.put("done", thread_id="thread-2", status="success")

    assert await store.start_run("holder") is True
    assert await store.start_run("holder") is False  # already running
    assert await store.start_run("waiter") is False  # queued
    assert await store.start_run("done") is False
    assert await store.start_run("missing") is False
    assert await status_of(store, "holder") == "running"
    assert await status_of(store, "waiter") == "pending"


async def test_has_active(store: RunStore) -> None:
    assert await store.has_active("thread-1") is False
    await store.admit("run-1", thread_id="thread-1", strategy=MultitaskStrategy.reject)
    assert await store.has_active("thread-1") is True
    await store.update_status("run-1", "timeout")
    assert await store.has_active("thread-1") is False


# --- orphans, leases, cancel requests ----------------------------------------


async def test_orphan_candidates_and_claims(store: RunStore) -> None:
    live = (NOW + timedelta(minutes=1)).isoformat()
    lapsed = (NOW - timedelta(seconds=1)).isoformat()
    await store.put("no-lease", thread_id="t1", status="running", created_at=at(1))
    await store.put(
        "lapsed", thread_id="t2", status="pending", lease_expires_at=lapsed, created_at=at(0)
    )
    await store.put(
        "live", thread_id="t3", status="running", lease_expires_at=live, created_at=at(2)
    )
    await store.put("ended", thread_id="t4", status="success", created_at=at(3))
    await store.put("late", thread_id="t5", status="running", created_at=at(10))

    candidates = await store.list_orphan_candidates(now=NOW, before=at(10))
    assert [row["run_id"] for row in candidates] == ["lapsed", "no-lease"]
    assert [r["run_id"] for r in await store.list_orphan_candidates(now=NOW, limit=1)] == ["lapsed"]

    claim: dict[str, Any] = {"owner_id": "me", "now": NOW, "ttl": TTL}
    assert await store.claim_orphan("no-lease", **claim) is True
    assert await store.claim_orphan("no-lease", **claim) is False  # once only
    assert await store.claim_orphan("lapsed", **claim) is True
    assert await store.claim_orphan("live", **claim) is False  # its owner is alive
    assert await store.claim_orphan("ended", **claim) is False
    assert await store.claim_orphan("missing", **claim) is False

    row = await store.get("no-lease")
    assert row is not None
    assert (row["owner_id"], row["stop_reason"], row["status"]) == (
        "me",
        ORPHAN_RECOVERED,
        "running",
    )
    assert instant(row["lease_expires_at"]) == NOW + TTL
    live_row = await store.get("live")
    assert live_row is not None
    assert live_row["owner_id"] is None
    remaining = await store.list_orphan_candidates(now=NOW)
    assert [row["run_id"] for row in remaining] == ["late"]


async def test_queued_runs_are_orphans_only_when_asked(store: RunStore) -> None:
    await store.put("holder", thread_id="t1", status="running", created_at=at(0))
    await store.put("waiter", thread_id="t1", status="pending", queued=True, created_at=at(1))

    plain = await store.list_orphan_candidates(now=NOW)
    everything = await store.list_orphan_candidates(now=NOW, include_queued=True)

    assert [row["run_id"] for row in plain] == ["holder"]
    assert [row["run_id"] for row in everything] == ["holder", "waiter"]


async def test_lease_times_default_to_the_database_clock(store: RunStore) -> None:
    real_now = datetime.now(UTC)
    await store.put(
        "lapsed",
        thread_id="t1",
        status="running",
        owner_id="dead",
        lease_expires_at=(real_now - timedelta(days=1)).isoformat(),
    )
    await store.put(
        "live",
        thread_id="t2",
        status="running",
        owner_id="alive",
        lease_expires_at=(real_now + timedelta(days=1)).isoformat(),
    )

    assert [row["run_id"] for row in await store.list_orphan_candidates()] == ["lapsed"]
    assert await store.claim_orphan("live", owner_id="me", ttl=TTL) is False
    assert await store.claim_orphan("lapsed", owner_id="me", ttl=TTL) is True
    await store.renew_leases("alive", ttl=timedelta(days=3))

    leases = {}
    for run_id in ("lapsed", "live"):
        row = await store.get(run_id)
        assert row is not None
        leases[run_id] = instant(row["lease_expires_at"])
    # Now + TTL on the database's clock (the same host here: hours of slack).
    assert abs(leases["lapsed"] - (real_now + TTL)) < timedelta(hours=1)
    assert abs(leases["live"] - (real_now + timedelta(days=3))) < timedelta(hours=1)


async def test_renew_leases_returns_cancel_requests(store: RunStore) -> None:
    old = (NOW - timedelta(seconds=5)).isoformat()
    await store.put("a", thread_id="t1", status="running", owner_id="me", lease_expires_at=old)
    await store.put("b", thread_id="t2", status="pending", owner_id="me", lease_expires_at=old)
    await store.put("ended", thread_id="t3", status="success", owner_id="me", lease_expires_at=old)
    await store.put(
        "theirs", thread_id="t4", status="running", owner_id="you", lease_expires_at=old
    )
    await store.put(
        "queued", thread_id="t2", status="pending", queued=True, owner_id="me", created_at=at(99)
    )
    await store.request_cancel("b", CancelAction.rollback, now=NOW)

    renewed = await store.renew_leases("me", ttl=TTL, now=NOW)

    assert renewed == [LeaseRenewal("a", None), LeaseRenewal("b", CancelAction.rollback)]
    leases = {}
    for run_id in ("a", "b", "ended", "theirs", "queued"):
        row = await store.get(run_id)
        assert row is not None
        leases[run_id] = instant(row["lease_expires_at"]) if row["lease_expires_at"] else None
    assert leases == {
        "a": NOW + TTL,
        "b": NOW + TTL,
        "ended": instant(old),
        "theirs": instant(old),
        "queued": None,
    }
    assert await store.renew_leases("nobody", ttl=TTL, now=NOW) == []


async def test_request_cancel_first_action_wins(store: RunStore) -> None:
    await store.admit("run-1", thread_id="thread-1", strategy=MultitaskStrategy.reject)

    first = await store.request_cancel("run-1", CancelAction.interrupt, now=NOW)
    second = await store.request_cancel(
        "run-1", CancelAction.rollback, now=NOW + timedelta(seconds=1)
    )

    assert (first, second) == (CancelAction.interrupt, CancelAction.interrupt)
    row = await store.get("run-1")
    assert row is not None
    assert row["cancel_action"] == "interrupt"
    assert instant(row["cancel_requested_at"]) == NOW


async def test_request_cancel_refuses_inactive_runs(store: RunStore) -> None:
    await store.put("done", thread_id="thread-1", status="success")

    assert await store.request_cancel("done", CancelAction.interrupt, now=NOW) is None
    assert await store.request_cancel("missing", CancelAction.interrupt, now=NOW) is None
    row = await store.get("done")
    assert row is not None
    assert (row["cancel_action"], row["cancel_requested_at"]) == (None, None)


# --- bad input ---------------------------------------------------------------


async def test_non_json_values_raise_and_write_nothing(store: RunStore) -> None:
    bad = {"when": object()}
    with pytest.raises(InvalidPayloadError):
        await store.put("run-1", thread_id="thread-1", metadata=bad)
    with pytest.raises(InvalidPayloadError):
        await store.admit(
            "run-2", thread_id="thread-1", strategy=MultitaskStrategy.reject, kwargs=bad
        )
    assert await ids(store, "thread-1") == []

    await store.put("run-3", thread_id="thread-2", status="running")
    with pytest.raises(InvalidPayloadError):
        await store.update_run_completion(
            "run-3", status="success", total_tokens=9, token_usage_by_model=bad
        )
    row = await store.get("run-3")
    assert row is not None
    assert (row["status"], row["total_tokens"]) == ("running", 0)


# --- concurrency ---------------------------------------------------------------


async def _gather_outcomes(*calls: Any) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_concurrent_reject_admits_exactly_one(store: RunStore) -> None:
    outcomes = await _gather_outcomes(
        *(
            store.admit(f"run-{i}", thread_id="thread-1", strategy=MultitaskStrategy.reject)
            for i in range(50)
        )
    )

    admitted = [o for o in outcomes if isinstance(o, Admission)]
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(admitted) == 1, [o for o in outcomes if not isinstance(o, Admission | ConflictError)]
    assert len(conflicts) == 49
    assert len(await ids(store, "thread-1")) == 1


async def test_concurrent_enqueue_gives_one_holder(store: RunStore) -> None:
    outcomes = await _gather_outcomes(
        *(
            store.admit(f"run-{i}", thread_id="thread-1", strategy=MultitaskStrategy.enqueue)
            for i in range(20)
        )
    )

    assert all(isinstance(o, Admission) for o in outcomes), outcomes
    assert sorted(o.queued for o in outcomes) == [False] + [True] * 19
    rows = await store.list_by_thread("thread-1")
    assert sum(not row["queued"] for row in rows) == 1


async def test_concurrent_interrupts_leave_one_active_run(store: RunStore) -> None:
    await store.admit("first", thread_id="thread-1", strategy=MultitaskStrategy.reject)

    outcomes = await _gather_outcomes(
        *(
            store.admit(f"run-{i}", thread_id="thread-1", strategy=MultitaskStrategy.interrupt)
            for i in range(10)
        )
    )

    assert all(isinstance(o, Admission | ConflictError) for o in outcomes), outcomes
    rows = await store.list_by_thread("thread-1")
    active = [row["run_id"] for row in rows if row["status"] == "pending"]
    assert len(active) == 1
    assert await status_of(store, "first") == "interrupted"


async def test_sql_lane_index_refuses_a_second_holder(
    store: RunStore, backend: tuple[str, str | None]
) -> None:
    if backend[0] == "memory":
        pytest.skip("the partial unique index exists only on SQL stores")
    await store.put("a", thread_id="thread-1", status="running")
    await store.put("queued", thread_id="thread-1", status="pending", queued=True)

    with pytest.raises(ConflictError):
        await store.put("b", thread_id="thread-1", status="pending")

    assert sorted(await ids(store, "thread-1")) == ["a", "queued"]
