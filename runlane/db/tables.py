"""The database schema as SQLAlchemy Core tables.

``runs``, ``threads``, ``assistants``, ``assistant_versions``, ``run_events``
and ``event_seq``.

This module is the single description of table, column and index names. The
Alembic migrations create the same schema explicitly (they never import this
module, so an old migration keeps meaning what it meant);
``tests/db/test_migrations.py`` checks that the two agree.

``runs`` keeps one row per run. Its columns are the keys of
:data:`runlane.runtime.runs.store.base.ROW_FIELDS` plus ``seq``, the insertion
order (the primary key, so SQLite assigns it as its rowid), used to break ties
between equal ``created_at`` values and to start queued runs in order.

The partial unique index ``uq_runs_thread_lane`` is the lane: at most one row
per thread that is ``pending`` or ``running`` and not ``queued``. It holds
across processes and is what makes admission atomic under concurrency.

``assistants`` holds each assistant as its current version reads;
``assistant_versions`` keeps every version ever written (the current one
included), so an older one can be made current again. Deleting an assistant
deletes its versions.

``run_events`` is the durable event log (:mod:`runlane.runtime.events`); its
primary key ``(thread_id, seq)`` makes a seq unique per thread. ``event_seq``
holds one counter row per thread, advanced by a single upsert that reserves
the seqs of a batch, so concurrent writers never compute ``max(seq) + 1``.
The partial unique index ``uq_run_events_singleton`` allows at most one event
per ``(run_id, event_type)`` among those written by ``put_if_absent``
(``singleton`` true). ``content`` is the JSON text of the value (str included),
in a ``Text`` column: JSONB would reorder a dict's keys, and SQLite gives a
column declared ``JSON`` numeric affinity, which would turn ``"42"`` into 42.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    column,
    false,
    func,
    not_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

__all__ = [
    "ACTIVE_STATUS_VALUES",
    "ASSISTANT_VERSION_COLUMNS",
    "LANE_INDEX",
    "NAMING_CONVENTION",
    "THREAD_STATUS_VALUES",
    "assistant_versions",
    "assistants",
    "event_seq",
    "metadata",
    "run_events",
    "runs",
    "threads",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ACTIVE_STATUS_VALUES = ("pending", "running")
THREAD_STATUS_VALUES = ("idle", "busy", "interrupted", "error")
LANE_INDEX = "uq_runs_thread_lane"


def _json() -> TypeEngine[Any]:
    # JSONB on Postgres: compact, and comparable should a query ever need it.
    return JSON().with_variant(JSONB(), "postgresql")


def _seq() -> TypeEngine[int]:
    # SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid alias).
    return BigInteger().with_variant(Integer(), "sqlite")


def _count(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default=text("0"))


runs = Table(
    "runs",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("thread_id", String(64), nullable=False),
    Column("assistant_id", String(128)),
    Column("user_id", String(64)),
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("on_disconnect", String(20)),
    Column("multitask_strategy", String(20)),
    Column("metadata", _json(), nullable=False),
    Column("kwargs", _json(), nullable=False),
    Column("model_name", String(128)),
    Column("error", Text),
    Column("stop_reason", String(50)),
    Column("queued", Boolean, nullable=False, server_default=false()),
    Column("owner_id", String(128)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("cancel_action", String(20)),
    Column("cancel_requested_at", DateTime(timezone=True)),
    _count("total_input_tokens"),
    _count("total_output_tokens"),
    _count("total_tokens"),
    _count("llm_call_count"),
    _count("lead_agent_tokens"),
    _count("subagent_tokens"),
    _count("middleware_tokens"),
    Column("token_usage_by_model", _json(), nullable=False),
    _count("message_count"),
    Column("first_human_message", Text),
    Column("last_ai_message", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_lane_predicate = and_(runs.c.status.in_(ACTIVE_STATUS_VALUES), not_(runs.c.queued))

Index("ix_runs_thread_id_status", runs.c.thread_id, runs.c.status)
Index("ix_runs_lease_expires_at", runs.c.lease_expires_at)
Index("ix_runs_user_id", runs.c.user_id)
Index("ix_runs_owner_id", runs.c.owner_id)
Index(
    LANE_INDEX,
    runs.c.thread_id,
    unique=True,
    sqlite_where=_lane_predicate,
    postgresql_where=_lane_predicate,
)

threads = Table(
    "threads",
    metadata,
    Column("thread_id", String(64), primary_key=True),
    Column("user_id", String(64)),
    Column("status", String(20), nullable=False, server_default=text("'idle'")),
    Column("metadata", _json(), nullable=False, server_default=text("'{}'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(column("status").in_(THREAD_STATUS_VALUES), name="status"),
)

Index("ix_threads_user_id", threads.c.user_id)

ASSISTANT_VERSION_COLUMNS = ("graph_id", "config", "context", "metadata", "name", "description")
"""The columns a version of an assistant fixes (``assistants`` and ``assistant_versions``)."""

assistants = Table(
    "assistants",
    metadata,
    Column("assistant_id", String(128), primary_key=True),
    Column("graph_id", String(255), nullable=False),
    Column("config", _json(), nullable=False),
    Column("context", _json(), nullable=False),
    Column("metadata", _json(), nullable=False),
    Column("name", Text),
    Column("description", Text),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

Index("ix_assistants_graph_id", assistants.c.graph_id)

assistant_versions = Table(
    "assistant_versions",
    metadata,
    Column(
        "assistant_id",
        String(128),
        ForeignKey("assistants.assistant_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True),
    Column("graph_id", String(255), nullable=False),
    Column("config", _json(), nullable=False),
    Column("context", _json(), nullable=False),
    Column("metadata", _json(), nullable=False),
    Column("name", Text),
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

run_events = Table(
    "run_events",
    metadata,
    Column("thread_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("category", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", _json(), nullable=False),
    Column("user_id", String(64)),
    Column("singleton", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

Index(
    "ix_run_events_thread_id_category_seq",
    run_events.c.thread_id,
    run_events.c.category,
    run_events.c.seq,
)
Index(
    "ix_run_events_thread_id_run_id_seq",
    run_events.c.thread_id,
    run_events.c.run_id,
    run_events.c.seq,
)
Index(
    "uq_run_events_singleton",
    run_events.c.run_id,
    run_events.c.event_type,
    unique=True,
    sqlite_where=run_events.c.singleton,
    postgresql_where=run_events.c.singleton,
)

event_seq = Table(
    "event_seq",
    metadata,
    Column("thread_id", String(64), primary_key=True),
    Column("next_seq", BigInteger, nullable=False),
)
