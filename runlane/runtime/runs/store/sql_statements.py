"""The statements :class:`~runlane.runtime.runs.store.sql.SqlRunStore` runs for every run.

Each is built once per shape and takes its values as bind parameters.
Building a Core statement and computing its cache key costs more CPU than
SQLite takes to execute it; a statement built once keeps its cache key, so a
call only binds values. The conditions come from
:mod:`~runlane.runtime.runs.store.sql_clauses`, unchanged.

Bind parameters are named ``p_<column>`` (SQLAlchemy reserves a column's own
name in ``SET`` and ``VALUES``) and carry the column's type, so the JSON and
DateTime bind processors run and asyncpg gets casts; :func:`params` turns
column values into them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BindParameter,
    Insert,
    Interval,
    Update,
    bindparam,
    case,
    false,
    func,
    insert,
    null,
    select,
    update,
)

from runlane.db.tables import runs
from runlane.runtime.runs.schemas import RunStatus
from runlane.runtime.runs.store.sql_clauses import (
    PENDING,
    QUEUED,
    lane_held,
    status_guard,
    thread_active,
)

__all__ = [
    "COLUMNS",
    "START",
    "claim_next",
    "enqueue",
    "insert_unless_active",
    "params",
    "transition",
]

COLUMNS = tuple(column.name for column in runs.columns if column.name != "seq")
"""Every column an admission writes (``seq`` is the database's)."""


def _p(name: str) -> BindParameter[Any]:
    return bindparam(f"p_{name}", type_=runs.c[name].type)


def params(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as this module's bind parameters."""
    return {f"p_{name}": value for name, value in values.items()}


def _admission(queued: Any, owner: Any, lease: Any) -> Any:
    columns = {name: _p(name) for name in COLUMNS}
    columns.update(queued=queued, owner_id=owner, lease_expires_at=lease)
    return select(*(columns[name] for name in COLUMNS))


@functools.cache
def enqueue() -> Insert:
    """Admit a run behind the thread's active runs: ``queued`` (and no owner
    or lease) exactly when the thread has one, decided by the insert itself.
    ``RETURNING queued``."""
    active = thread_active(_p("thread_id"))
    row = _admission(
        active,
        case((active, null()), else_=_p("owner_id")),
        case((active, null()), else_=_p("lease_expires_at")),
    )
    return insert(runs).from_select(COLUMNS, row).returning(runs.c.queued)


@functools.cache
def insert_unless_active() -> Insert:
    """Admit a run only if the thread has no active run (``reject``); ``RETURNING run_id``."""
    row = _admission(_p("queued"), _p("owner_id"), _p("lease_expires_at")).where(
        ~thread_active(_p("thread_id"))
    )
    return insert(runs).from_select(COLUMNS, row).returning(runs.c.run_id)


START = (
    update(runs)
    .where(runs.c.run_id == _p("run_id"), PENDING, runs.c.queued.is_(false()))
    .values(status=RunStatus.running.value, updated_at=_p("updated_at"))
)
"""Promote the lane holder from ``pending`` to ``running`` (binds ``run_id``, ``updated_at``)."""


@functools.cache
def transition(new: RunStatus, columns: frozenset[str]) -> Update:
    """Move a run to ``new`` where the contract allows it, writing ``columns`` too.

    Binds ``run_id``, ``status``, ``updated_at`` and each of ``columns``.
    """
    written = sorted(columns | {"status", "updated_at"})
    return (
        update(runs)
        .where(runs.c.run_id == _p("run_id"), status_guard(new))
        .values({name: _p(name) for name in written})
    )


@functools.cache
def claim_next(database_clock: bool) -> Update:
    """Promote the thread's oldest queued run to lane holder, owned by ``owner_id``.

    Binds ``thread_id``, ``owner_id``, ``updated_at`` and the lease: a
    ``p_ttl`` interval added to the database's ``now()`` when
    ``database_clock``, else ``lease_expires_at``. ``RETURNING`` the row.
    """
    oldest = (
        select(runs.c.seq)
        .where(runs.c.thread_id == _p("thread_id"), QUEUED)
        .order_by(runs.c.seq)
        .limit(1)
        .scalar_subquery()
    )
    lease = (
        func.now() + bindparam("p_ttl", type_=Interval())
        if database_clock
        else _p("lease_expires_at")
    )
    return (
        update(runs)
        # Re-checking queued/pending on the row itself makes a concurrent
        # claimer that lost the row lock match nothing (Postgres re-evaluates
        # row conditions after the lock, not the subqueries).
        .where(runs.c.seq == oldest, QUEUED, ~lane_held(_p("thread_id")))
        .values(
            queued=False,
            owner_id=_p("owner_id"),
            lease_expires_at=lease,
            updated_at=_p("updated_at"),
        )
        .returning(*runs.c)
    )
