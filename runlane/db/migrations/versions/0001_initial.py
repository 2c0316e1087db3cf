"""Initial schema: the ``runs`` and ``threads`` tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written out in full rather than importing ``runlane.db.tables``, so this
revision keeps creating exactly this schema when the tables module evolves.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("assistant_id", sa.String(128)),
        sa.Column("user_id", sa.String(64)),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("on_disconnect", sa.String(20)),
        sa.Column("multitask_strategy", sa.String(20)),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("kwargs", _json(), nullable=False),
        sa.Column("model_name", sa.String(128)),
        sa.Column("error", sa.Text()),
        sa.Column("stop_reason", sa.String(50)),
        sa.Column("queued", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("owner_id", sa.String(128)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_action", sa.String(20)),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True)),
        _count("total_input_tokens"),
        _count("total_output_tokens"),
        _count("total_tokens"),
        _count("llm_call_count"),
        _count("lead_agent_tokens"),
        _count("subagent_tokens"),
        _count("middleware_tokens"),
        sa.Column("token_usage_by_model", _json(), nullable=False),
        _count("message_count"),
        sa.Column("first_human_message", sa.Text()),
        sa.Column("last_ai_message", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_runs"),
        sa.UniqueConstraint("run_id", name="uq_runs_run_id"),
    )
    op.create_index("ix_runs_thread_id_status", "runs", ["thread_id", "status"])
    op.create_index("ix_runs_lease_expires_at", "runs", ["lease_expires_at"])
    op.create_index("ix_runs_user_id", "runs", ["user_id"])
    op.create_index("ix_runs_owner_id", "runs", ["owner_id"])
    # The lane: one pending|running, non-queued run per thread, in every process.
    lane = sa.and_(
        sa.column("status").in_(("pending", "running")),
        sa.not_(sa.column("queued", sa.Boolean())),
    )
    op.create_index(
        "uq_runs_thread_lane",
        "runs",
        ["thread_id"],
        unique=True,
        sqlite_where=lane,
        postgresql_where=lane,
    )

    op.create_table(
        "threads",
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'idle'")),
        sa.Column("metadata", _json(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("thread_id", name="pk_threads"),
        sa.CheckConstraint(
            sa.column("status").in_(("idle", "busy", "interrupted", "error")),
            name=op.f("ck_threads_status"),
        ),
    )
    op.create_index("ix_threads_user_id", "threads", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_threads_user_id", table_name="threads")
    op.drop_table("threads")
    op.drop_index("uq_runs_thread_lane", table_name="runs")
    op.drop_index("ix_runs_owner_id", table_name="runs")
    op.drop_index("ix_runs_user_id", table_name="runs")
    op.drop_index("ix_runs_lease_expires_at", table_name="runs")
    op.drop_index("ix_runs_thread_id_status", table_name="runs")
    op.drop_table("runs")
