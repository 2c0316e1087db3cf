"""SqlRunStore: the run store on SQLite (aiosqlite) or Postgres (asyncpg).

Every method is one SQLAlchemy Core statement, or one short transaction where
the contract needs two, and every decision is made by the database:

- the lane is the partial unique index ``uq_runs_thread_lane``; admission is
  ``INSERT ... SELECT ... WHERE NOT EXISTS`` (reject) or computes ``queued``
  in the same statement (enqueue); a concurrent admission that slips past the
  check hits the index, and a unique violation becomes ConflictError (or, for
  enqueue and the pre-empting strategies, a fresh attempt);
- status writes carry the allowed source statuses in their ``WHERE`` clause,
  derived from :func:`~runlane.runtime.runs.schemas.can_transition`, so a
  late writer matches no row instead of overwriting a terminal status;
- leases, orphan claims and cancel requests are conditional ``UPDATE``s;
  with ``now=None`` lease times come from the database's clock on Postgres
  (``now()``; on SQLite, one process, the host's clock);
- a queued run is claimed by promoting it to lane holder and setting its
  owner in one ``UPDATE``; the sweep for stalled queues locks candidates
  with ``FOR UPDATE SKIP LOCKED`` on Postgres;
- a cancel request or pre-emption sends ``pg_notify`` on
  :data:`~runlane.db.notify.CANCEL_CHANNEL` in the same transaction.

Transient errors (SQLite busy, Postgres serialization/deadlock, lost
connections) are raised unchanged; the caller retries them with
:func:`runlane.runtime.runs.retry.call_with_retry`. The store guarantees that
a failed call wrote nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    Update,
    false,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runlane.db.engine import begin_read, begin_write, create_engine
from runlane.db.notify import CANCEL_CHANNEL, DISPATCH_CHANNEL
from runlane.db.single_write import write_one
from runlane.db.tables import ACTIVE_STATUS_VALUES, runs
from runlane.exceptions import ConflictError
from runlane.runtime.runs.retry import is_unique_violation
from runlane.runtime.runs.schemas import (
    COMPLETION_FIELDS,
    ORPHAN_RECOVERED,
    SUPERSEDED_ERROR,
    CancelAction,
    MultitaskStrategy,
    RunStatus,
    parse_status,
    parse_strategy,
)
from runlane.runtime.runs.store import sql_statements as statements
from runlane.runtime.runs.store.base import Admission, LeaseRenewal, RunStore
from runlane.runtime.runs.store.sql_clauses import (
    ACTIVE,
    QUEUED,
    lane_held,
    lease_lapsed,
    thread_active,
)
from runlane.runtime.runs.store.sql_rows import (
    column_value,
    new_row_values,
    now_utc,
    row_to_dict,
    to_utc,
)

__all__ = ["SqlRunStore"]

# A pre-empting admission races other admissions on the same thread only when
# they commit between its UPDATE and its INSERT; a few fresh tries settle it.
_ADMIT_ATTEMPTS = 3
_COMPLETION_KEYS = frozenset(COMPLETION_FIELDS) | {"error", "stop_reason"}


class SqlRunStore(RunStore):
    """Run rows in the ``runs`` table of a migrated database.

    The engine must come from :func:`runlane.db.engine.create_engine` (or be
    configured alike) and the schema must be at head
    (:func:`runlane.db.migrate.upgrade`). The store disposes the engine on
    :meth:`close` only if it created it (:meth:`from_url`).
    """

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"SqlRunStore supports SQLite and Postgres, not {engine.dialect.name}")
        self._engine = engine
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str) -> SqlRunStore:
        """A store on a new engine for ``url``, closed with the store."""
        return cls(create_engine(url), owns_engine=True)

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    def _insert(self) -> postgresql.Insert | sqlite.Insert:
        # Both dialects spell the upsert ON CONFLICT ... DO UPDATE.
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(runs)
        return sqlite.insert(runs)

    async def _fetch(self, statement: Any) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            result = await conn.execute(statement)
            return [row_to_dict(dict(row)) for row in result.mappings()]

    # --- rows -------------------------------------------------------------

    async def put(self, run_id: str, *, thread_id: str, **fields: Any) -> None:
        values = new_row_values(run_id, thread_id, fields)
        statement = self._insert().values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[runs.c.run_id],
            set_={name: statement.excluded[name] for name in values if name != "run_id"},
        )
        async with self._lane_conflicts(thread_id), begin_write(self._engine) as conn:
            await conn.execute(statement)

    async def get(self, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        statement = select(runs).where(runs.c.run_id == run_id)
        if user_id is not None:
            statement = statement.where(runs.c.user_id == user_id)
        rows = await self._fetch(statement)
        return rows[0] if rows else None

    async def list_by_thread(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        statement = select(runs).where(runs.c.thread_id == thread_id)
        if user_id is not None:
            statement = statement.where(runs.c.user_id == user_id)
        if status is not None:
            statement = statement.where(runs.c.status == parse_status(status).value)
        statement = (
            statement.order_by(runs.c.created_at.desc(), runs.c.seq.asc())
            .limit(limit)
            .offset(offset)
        )
        return await self._fetch(statement)

    async def delete(self, run_id: str) -> bool:
        async with begin_write(self._engine) as conn:
            result = await conn.execute(runs.delete().where(runs.c.run_id == run_id))
        return result.rowcount == 1

    # --- admission and the lane -------------------------------------------

    async def admit(
        self, run_id: str, *, thread_id: str, strategy: MultitaskStrategy, **fields: Any
    ) -> Admission:
        strategy = parse_strategy(strategy)
        values = new_row_values(
            run_id, thread_id, {**fields, "status": RunStatus.pending, "queued": False}
        )
        if strategy == MultitaskStrategy.reject:
            async with self._lane_conflicts(thread_id):
                inserted = await write_one(
                    self._engine, statements.insert_unless_active(), statements.params(values)
                )
            if not inserted.rows:
                raise ConflictError(f"Thread {thread_id} already has an active run.")
            return Admission(queued=False)

        for attempt in range(1, _ADMIT_ATTEMPTS + 1):
            try:
                if strategy == MultitaskStrategy.enqueue:
                    # `queued` is decided by the same statement that inserts the
                    # row; a queued run belongs to nobody until a process claims it.
                    admitted = await write_one(
                        self._engine, statements.enqueue(), statements.params(values)
                    )
                    return Admission(queued=bool(admitted.rows[0]["queued"]))
                async with begin_write(self._engine) as conn:
                    return await self._preempt(conn, values, CancelAction(strategy.value))
            except IntegrityError as exc:
                if not is_unique_violation(exc):
                    raise
                if attempt == _ADMIT_ATTEMPTS:
                    raise ConflictError(
                        f"Thread {thread_id} kept changing during admission; retry the request."
                    ) from exc
        raise AssertionError("unreachable")

    async def _preempt(
        self, conn: AsyncConnection, values: dict[str, Any], action: CancelAction
    ) -> Admission:
        now = now_utc()
        if conn.dialect.name == "postgresql":
            # Lock the rows in one order first: two pre-empting admissions on
            # a thread then queue behind each other instead of deadlocking.
            await conn.execute(
                select(runs.c.seq)
                .where(runs.c.thread_id == values["thread_id"], ACTIVE)
                .order_by(runs.c.seq)
                .with_for_update()
            )
        ended = await conn.execute(
            update(runs)
            .where(runs.c.thread_id == values["thread_id"], ACTIVE)
            .values(
                status=RunStatus.interrupted.value,
                error=SUPERSEDED_ERROR,
                # A cancel requested earlier keeps its action: the first one wins.
                cancel_action=func.coalesce(runs.c.cancel_action, action.value),
                cancel_requested_at=func.coalesce(
                    runs.c.cancel_requested_at, literal(now, runs.c.cancel_requested_at.type)
                ),
                updated_at=now,
            )
            .returning(runs.c.seq, runs.c.run_id)
        )
        preempted = tuple(run_id for _, run_id in sorted(ended.all()))
        await conn.execute(self._insert().values(values))
        for run_id in preempted:
            await self._notify(conn, CANCEL_CHANNEL, run_id)
        return Admission(queued=False, preempted=preempted)

    @staticmethod
    async def _notify(conn: AsyncConnection, channel: str, payload: str) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(select(func.pg_notify(channel, payload)))

    # --- clocks -------------------------------------------------------------

    def _moment(self, now: datetime | None) -> ColumnElement[datetime]:
        """``now``, or the database's clock when None (the host's on SQLite)."""
        if now is None and self._engine.dialect.name == "postgresql":
            return func.now()
        return literal(to_utc(now or now_utc()), runs.c.lease_expires_at.type)

    def _lease_until(self, now: datetime | None, ttl: timedelta) -> ColumnElement[datetime]:
        if now is None and self._engine.dialect.name == "postgresql":
            return func.now() + literal(ttl, Interval())
        return literal(to_utc((now or now_utc()) + ttl), runs.c.lease_expires_at.type)

    @asynccontextmanager
    async def _lane_conflicts(self, thread_id: str) -> AsyncIterator[None]:
        """Turn a unique violation (the lane or the run id) into ConflictError."""
        try:
            yield
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise ConflictError(
                    f"Thread {thread_id} already has an active run (or the run id is taken)."
                ) from exc
            raise

    async def claim_next(
        self, thread_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> dict[str, Any] | None:
        database_clock = now is None and self._engine.dialect.name == "postgresql"
        values: dict[str, Any] = {
            "thread_id": thread_id,
            "owner_id": owner_id,
            "updated_at": now_utc(),
        }
        if database_clock:
            values["ttl"] = ttl
        else:
            values["lease_expires_at"] = to_utc((now or now_utc()) + ttl)
        statement = statements.claim_next(database_clock)
        try:
            claimed = await write_one(self._engine, statement, statements.params(values))
        except IntegrityError as exc:
            if is_unique_violation(exc):
                return None  # a concurrent admission took the lane first
            raise
        return row_to_dict(claimed.rows[0]) if claimed.rows else None

    async def claim_stalled(
        self, *, owner_id: str, ttl: timedelta, now: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        waiting = runs.alias("waiting")
        oldest_of_thread = (
            select(func.min(waiting.c.seq))
            .where(
                waiting.c.thread_id == runs.c.thread_id,
                waiting.c.queued.is_(true()),
                waiting.c.status == RunStatus.pending.value,
            )
            .scalar_subquery()
        )
        candidates = (
            select(runs.c.seq)
            .where(QUEUED, runs.c.seq == oldest_of_thread, ~lane_held(runs.c.thread_id))
            .order_by(runs.c.seq)
            .limit(limit)
        )
        if self._engine.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        try:
            async with begin_write(self._engine) as conn:
                seqs = (await conn.execute(candidates)).scalars().all()
                if not seqs:
                    return []
                claimed = await conn.execute(
                    update(runs)
                    .where(runs.c.seq.in_(seqs), QUEUED)
                    .values(**self._claim_values(owner_id, ttl, now))
                    .returning(*runs.c)
                )
                rows = [row_to_dict(dict(row)) for row in claimed.mappings()]
        except IntegrityError as exc:
            if is_unique_violation(exc):
                return []  # an admission took one of the lanes; the next sweep retries
            raise
        return sorted(rows, key=lambda row: row["created_at"])

    def _claim_values(self, owner_id: str, ttl: timedelta, now: datetime | None) -> dict[str, Any]:
        return {
            "queued": False,
            "owner_id": owner_id,
            "lease_expires_at": self._lease_until(now, ttl),
            "updated_at": now_utc(),
        }

    async def announce_free_lanes(self, thread_ids: Sequence[str]) -> None:
        if self._engine.dialect.name != "postgresql" or not thread_ids:
            return
        async with self._engine.begin() as conn:
            for thread_id in thread_ids:
                await self._notify(conn, DISPATCH_CHANNEL, thread_id)

    async def start_run(self, run_id: str) -> bool:
        return await self._write_one(statements.START, {"run_id": run_id})

    async def update_status(self, run_id: str, status: str, *, error: str | None = None) -> bool:
        new = parse_status(status)
        values: dict[str, Any] = {"status": new.value}
        if error is not None:
            values["error"] = error
        return await self._transition(run_id, new, values)

    async def update_run_completion(self, run_id: str, *, status: str, **stats: Any) -> bool:
        unknown = set(stats) - _COMPLETION_KEYS
        if unknown:
            raise TypeError(f"unknown completion fields: {', '.join(sorted(unknown))}")
        new = parse_status(status)
        values = {name: column_value(name, value) for name, value in stats.items()}
        values["status"] = new.value
        return await self._transition(run_id, new, values)

    async def _transition(self, run_id: str, new: RunStatus, values: dict[str, Any]) -> bool:
        statement = statements.transition(new, frozenset(values) - {"status"})
        return await self._write_one(statement, {"run_id": run_id, **values})

    async def _write_one(self, statement: Update, values: dict[str, Any]) -> bool:
        """Run a statement of :mod:`.sql_statements` binding ``values`` and
        ``updated_at`` (now); whether it changed one row."""
        written = await write_one(
            self._engine, statement, statements.params({"updated_at": now_utc(), **values})
        )
        return written.rowcount == 1

    async def _update(self, where: tuple[ColumnElement[bool], ...], values: dict[str, Any]) -> bool:
        statement = update(runs).where(*where).values(updated_at=now_utc(), **values)
        async with begin_write(self._engine) as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1

    async def has_active(self, thread_id: str) -> bool:
        async with begin_read(self._engine) as conn:
            return bool(await conn.scalar(select(thread_active(thread_id))))

    # --- ownership: orphans, leases, cancel requests -----------------------

    async def list_orphan_candidates(
        self,
        *,
        now: datetime | None = None,
        before: str | None = None,
        limit: int = 1000,
        include_queued: bool = False,
    ) -> list[dict[str, Any]]:
        statement = select(runs).where(ACTIVE, lease_lapsed(self._moment(now)))
        if not include_queued:
            statement = statement.where(runs.c.queued.is_(false()))
        if before is not None:
            statement = statement.where(runs.c.created_at < to_utc(before))
        statement = statement.order_by(runs.c.created_at, runs.c.seq).limit(limit)
        return await self._fetch(statement)

    async def claim_orphan(
        self, run_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        return await self._update(
            (runs.c.run_id == run_id, ACTIVE, lease_lapsed(self._moment(now))),
            {
                "owner_id": owner_id,
                "lease_expires_at": self._lease_until(now, ttl),
                "stop_reason": ORPHAN_RECOVERED,
            },
        )

    async def renew_leases(
        self, owner_id: str, *, ttl: timedelta, now: datetime | None = None
    ) -> list[LeaseRenewal]:
        # updated_at is left alone: a heartbeat is not a change of the run.
        statement = (
            update(runs)
            .where(runs.c.owner_id == owner_id, ACTIVE, runs.c.queued.is_(false()))
            .values(lease_expires_at=self._lease_until(now, ttl))
            .returning(runs.c.seq, runs.c.run_id, runs.c.cancel_action)
        )
        async with begin_write(self._engine) as conn:
            renewed = sorted((await conn.execute(statement)).all())
        return [
            LeaseRenewal(run_id, CancelAction(action) if action else None)
            for _, run_id, action in renewed
        ]

    async def request_cancel(
        self, run_id: str, action: CancelAction, *, now: datetime
    ) -> CancelAction | None:
        action = CancelAction(action)
        statement = (
            update(runs)
            .where(runs.c.run_id == run_id, ACTIVE, runs.c.cancel_action.is_(None))
            .values(
                cancel_action=action.value, cancel_requested_at=to_utc(now), updated_at=now_utc()
            )
            .returning(runs.c.cancel_action)
        )
        async with begin_write(self._engine) as conn:
            if (await conn.execute(statement)).first() is not None:
                await self._notify(conn, CANCEL_CHANNEL, run_id)
                return action
            # Lost, or the run is not active: the row says which. Same
            # transaction, so on SQLite no writer can slip in between.
            current = (
                await conn.execute(
                    select(runs.c.status, runs.c.cancel_action).where(runs.c.run_id == run_id)
                )
            ).first()
        if (
            current is None
            or current.status not in ACTIVE_STATUS_VALUES
            or not current.cancel_action
        ):
            return None
        return CancelAction(current.cancel_action)
