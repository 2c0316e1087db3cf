"""MemoryRunStore: the run store of a single process without a database.

It gives every guarantee of :mod:`runlane.runtime.runs.store.base` within one
process (each method runs without an ``await`` between its check and its
write, so asyncio tasks cannot interleave inside it). Rows live as long as the
process; use the SQL store for anything that must survive a restart.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from runlane.exceptions import ConflictError, InvalidPayloadError
from runlane.runtime.runs.schemas import (
    ACTIVE_STATUSES,
    COMPLETION_FIELDS,
    ORPHAN_RECOVERED,
    SUPERSEDED_ERROR,
    CancelAction,
    MultitaskStrategy,
    RunStatus,
    can_transition,
    parse_status,
    parse_strategy,
)
from runlane.runtime.runs.store.base import (
    ROW_FIELDS,
    Admission,
    LeaseRenewal,
    RunStore,
    check_fields,
    row_defaults,
)

__all__ = ["MemoryRunStore"]

_JSON_FIELDS = ("metadata", "kwargs", "token_usage_by_model")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | str | None) -> str | None:
    """UTC ISO-8601 with offset, as the SQL store returns it."""
    if value is None:
        return None
    moment = _parse(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_copy(name: str, value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise InvalidPayloadError(f"Run field {name!r} is not JSON-serialisable: {exc}") from None


def _is_active(row: dict[str, Any]) -> bool:
    return (row["status"] or RunStatus.pending) in ACTIVE_STATUSES


def _lease_expired(row: dict[str, Any], now: datetime) -> bool:
    lease = row["lease_expires_at"]
    return lease is None or _parse(lease) < now


class MemoryRunStore(RunStore):
    """Run rows in a dict, with the same contract as the SQL store."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._threads: dict[str, dict[str, None]] = {}
        self._order: dict[str, int] = {}
        self._counter = itertools.count()

    def _build(self, run_id: str, thread_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        check_fields(fields)
        row = row_defaults()
        row.update(fields)
        for name in _JSON_FIELDS:
            row[name] = _json_copy(name, row[name] if row[name] is not None else {})
        now = _iso(_now())
        row["run_id"] = run_id
        row["thread_id"] = thread_id
        row["created_at"] = _iso(row.get("created_at")) or now
        row["updated_at"] = _iso(row.get("updated_at")) or row["created_at"]
        row["lease_expires_at"] = _iso(row["lease_expires_at"])
        row["cancel_requested_at"] = _iso(row["cancel_requested_at"])
        # A NULL status is stored as pending, as the SQL column is NOT NULL.
        row["status"] = parse_status(row["status"] or RunStatus.pending.value).value
        return {name: row[name] for name in ROW_FIELDS}

    def _insert(self, row: dict[str, Any]) -> None:
        run_id = row["run_id"]
        old = self._rows.get(run_id)
        if old is not None and old["thread_id"] != row["thread_id"]:
            self._threads[old["thread_id"]].pop(run_id, None)
        if run_id not in self._order:
            self._order[run_id] = next(self._counter)
        self._rows[run_id] = row
        self._threads.setdefault(row["thread_id"], {})[run_id] = None

    def _touch(self, row: dict[str, Any]) -> None:
        row["updated_at"] = _iso(_now())

    def _thread_rows(self, thread_id: str) -> list[dict[str, Any]]:
        rows = [self._rows[run_id] for run_id in self._threads.get(thread_id, ())]
        rows.sort(key=lambda row: self._order[row["run_id"]])
        return rows

    def _lane_held(self, thread_id: str) -> bool:
        return any(_is_active(row) and not row["queued"] for row in self._thread_rows(thread_id))

    async def put(self, run_id: str, *, thread_id: str, **fields: Any) -> None:
        self._insert(self._build(run_id, thread_id, fields))

    async def get(self, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        row = self._rows.get(run_id)
        if row is None or (user_id is not None and row["user_id"] != user_id):
            return None
        return copy.deepcopy(row)

    async def list_by_thread(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        if status is not None:
            status = parse_status(status).value
        rows = [
            row
            for row in self._thread_rows(thread_id)
            if (user_id is None or row["user_id"] == user_id)
            and (status is None or row["status"] == status)
        ]
        # Stable sort: equal created_at keeps insertion order.
        rows.sort(key=lambda row: _parse(row["created_at"]), reverse=True)
        return [copy.deepcopy(row) for row in rows[offset : offset + limit]]

    async def delete(self, run_id: str) -> bool:
        self._order.pop(run_id, None)
        row = self._rows.pop(run_id, None)
        if row is None:
            return False
        siblings = self._threads[row["thread_id"]]
        siblings.pop(run_id, None)
        if not siblings:
            del self._threads[row["thread_id"]]
        return True

    async def admit(
        self, run_id: str, *, thread_id: str, strategy: MultitaskStrategy, **fields: Any
    ) -> Admission:
        strategy = parse_strategy(strategy)
        row = self._build(run_id, thread_id, {**fields, "status": RunStatus.pending.value})
        active = [r for r in self._thread_rows(thread_id) if _is_active(r)]
        preempted: list[str] = []
        if active and strategy == MultitaskStrategy.reject:
            raise ConflictError(f"Thread {thread_id} already has an active run.")
        if active and strategy == MultitaskStrategy.enqueue:
            row.update(queued=True, owner_id=None, lease_expires_at=None)
        elif active:
            action = CancelAction(strategy.value)
            for other in active:
                other.update(
                    status=RunStatus.interrupted.value,
                    error=SUPERSEDED_ERROR,
                    cancel_action=other["cancel_action"] or action.value,
                    cancel_requested_at=other["cancel_requested_at"] or _iso(_now()),
                )
                self._touch(other)
                preempted.append(other["run_id"])
        self._insert(row)
        return Admission(queued=row["queued"], preempted=tuple(preempted))

    async def claim_next(
        self, thread_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> dict[str, Any] | None:
        if self._lane_held(thread_id):
            return None
        for row in self._thread_rows(thread_id):
            if row["queued"] and row["status"] == RunStatus.pending:
                row.update(
                    queued=False, owner_id=owner_id, lease_expires_at=_iso((now or _now()) + ttl)
                )
                self._touch(row)
                return copy.deepcopy(row)
        return None

    async def claim_stalled(
        self, *, owner_id: str, ttl: timedelta, now: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        claimed: list[dict[str, Any]] = []
        waiting = {
            row["thread_id"]
            for row in self._rows.values()
            if row["queued"] and row["status"] == RunStatus.pending
        }
        for thread_id in sorted(waiting):
            if len(claimed) == limit:
                break
            row = await self.claim_next(thread_id, owner_id=owner_id, ttl=ttl, now=now)
            if row is not None:
                claimed.append(row)
        return claimed

    async def start_run(self, run_id: str) -> bool:
        row = self._rows.get(run_id)
        if row is None or row["queued"] or (row["status"] or "pending") != RunStatus.pending:
            return False
        row["status"] = RunStatus.running.value
        self._touch(row)
        return True

    async def update_status(self, run_id: str, status: str, *, error: str | None = None) -> bool:
        status = parse_status(status).value
        row = self._rows.get(run_id)
        if row is None or not can_transition(row["status"], status):
            return False
        if status == RunStatus.running and row["queued"]:
            return False
        row["status"] = str(status)
        if error is not None:
            row["error"] = error
        self._touch(row)
        return True

    async def update_run_completion(self, run_id: str, *, status: str, **stats: Any) -> bool:
        unknown = set(stats) - {*COMPLETION_FIELDS, "error", "stop_reason"}
        if unknown:
            raise TypeError(f"unknown completion fields: {', '.join(sorted(unknown))}")
        status = parse_status(status).value
        row = self._rows.get(run_id)
        if row is None or not can_transition(row["status"], status):
            return False
        values = dict(stats)
        if "token_usage_by_model" in values:
            values["token_usage_by_model"] = _json_copy(
                "token_usage_by_model", values["token_usage_by_model"] or {}
            )
        row.update(values)
        row["status"] = str(status)
        self._touch(row)
        return True

    async def has_active(self, thread_id: str) -> bool:
        return any(_is_active(row) for row in self._thread_rows(thread_id))

    async def list_orphan_candidates(
        self,
        *,
        now: datetime | None = None,
        before: str | None = None,
        limit: int = 1000,
        include_queued: bool = False,
    ) -> list[dict[str, Any]]:
        cutoff = _parse(before) if before is not None else None
        now = now or _now()
        rows = [
            row
            for row in self._rows.values()
            if _is_active(row)
            and (include_queued or not row["queued"])
            and _lease_expired(row, now)
            and (cutoff is None or _parse(row["created_at"]) < cutoff)
        ]
        rows.sort(key=lambda row: (_parse(row["created_at"]), self._order[row["run_id"]]))
        return [copy.deepcopy(row) for row in rows[:limit]]

    async def claim_orphan(
        self, run_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        now = now or _now()
        row = self._rows.get(run_id)
        if row is None or not _is_active(row) or not _lease_expired(row, now):
            return False
        row.update(
            owner_id=owner_id, lease_expires_at=_iso(now + ttl), stop_reason=ORPHAN_RECOVERED
        )
        self._touch(row)
        return True

    async def renew_leases(
        self, owner_id: str, *, ttl: timedelta, now: datetime | None = None
    ) -> list[LeaseRenewal]:
        lease = _iso((now or _now()) + ttl)
        renewed = []
        for run_id in sorted(self._rows, key=self._order.__getitem__):
            row = self._rows[run_id]
            if row["owner_id"] == owner_id and _is_active(row) and not row["queued"]:
                row["lease_expires_at"] = lease
                action = row["cancel_action"]
                renewed.append(LeaseRenewal(run_id, CancelAction(action) if action else None))
        return renewed

    async def request_cancel(
        self, run_id: str, action: CancelAction, *, now: datetime
    ) -> CancelAction | None:
        row = self._rows.get(run_id)
        if row is None or not _is_active(row):
            return None
        if row["cancel_action"] is None:
            row["cancel_action"] = CancelAction(action).value
            row["cancel_requested_at"] = _iso(now)
            self._touch(row)
        return CancelAction(row["cancel_action"])
