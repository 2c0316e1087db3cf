"""The ``WHERE`` building blocks of :class:`~runlane.runtime.runs.store.sql.SqlRunStore`.

Each is a SQLAlchemy Core expression over the ``runs`` table that encodes one
rule of the store contract (:mod:`runlane.runtime.runs.store.base`), so the
database, not the process, decides it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, literal, or_, true

from runlane.db.tables import ACTIVE_STATUS_VALUES, runs
from runlane.runtime.runs.schemas import RunStatus, can_transition

__all__ = [
    "ACTIVE",
    "one_of",
    "PENDING",
    "QUEUED",
    "lane_held",
    "lease_lapsed",
    "status_guard",
    "thread_active",
]


def one_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (...)`` with one bound parameter per value, fixed in the statement.

    Not SQLAlchemy's expanding list, which is rewritten on every execution:
    this compiles to the same SQL every time, as
    :func:`runlane.db.single_write.write_one` needs.
    """
    return column.in_([literal(value, column.type) for value in values])


ACTIVE = one_of(runs.c.status, ACTIVE_STATUS_VALUES)
"""The row is ``pending`` or ``running``."""
PENDING = runs.c.status == RunStatus.pending.value
"""The row is ``pending``."""
QUEUED = and_(runs.c.queued.is_(true()), PENDING)
"""The row waits in its thread's queue."""


def thread_active(thread_id: Any) -> ColumnElement[bool]:
    """The thread has an active run (holding its lane or queued); ``thread_id``
    may be a bind parameter."""
    return exists().where(runs.c.thread_id == thread_id, ACTIVE)


_holder = runs.alias("holder")  # built once: this clause is on every run's end


def lane_held(thread_id: Any) -> ColumnElement[bool]:
    """The thread's lane has a holder; ``thread_id`` may be a column (correlated)."""
    return exists().where(
        _holder.c.thread_id == thread_id,
        one_of(_holder.c.status, ACTIVE_STATUS_VALUES),
        _holder.c.queued.is_(false()),
    )


def lease_lapsed(now: ColumnElement[datetime]) -> ColumnElement[bool]:
    """The row's lease is missing or expired at ``now``."""
    return or_(runs.c.lease_expires_at.is_(None), runs.c.lease_expires_at < now)


def status_guard(new: RunStatus) -> ColumnElement[bool]:
    """The ``WHERE`` form of ``can_transition(current, new)`` for every current."""
    sources = [status.value for status in RunStatus if can_transition(status, new)]
    guard: ColumnElement[bool] = one_of(runs.c.status, sources)
    if new == RunStatus.running:
        # Only the lane holder runs; a queued row must be promoted first.
        guard = and_(guard, runs.c.queued.is_(false()))
    return guard
