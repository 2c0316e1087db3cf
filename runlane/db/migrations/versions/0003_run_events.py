"""Run event log: the ``run_events`` and ``event_seq`` tables.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Written out in full rather than importing ``runlane.db.tables``, so this
revision keeps creating exactly this schema when the tables module evolves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "run_events",
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        # JSON text: JSONB would reorder keys; SQLite's JSON affinity is numeric.
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(64)),
        sa.Column("singleton", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", "seq", name="pk_run_events"),
    )
    op.create_index(
        "ix_run_events_thread_id_category_seq", "run_events", ["thread_id", "category", "seq"]
    )
    op.create_index(
        "ix_run_events_thread_id_run_id_seq", "run_events", ["thread_id", "run_id", "seq"]
    )
    op.create_index(
        "uq_run_events_singleton",
        "run_events",
        ["run_id", "event_type"],
        unique=True,
        sqlite_where=sa.text("singleton"),
        postgresql_where=sa.text("singleton"),
    )

    op.create_table(
        "event_seq",
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", name="pk_event_seq"),
    )


def downgrade() -> None:
    op.drop_table("event_seq")
    op.drop_index("uq_run_events_singleton", table_name="run_events")
    op.drop_index("ix_run_events_thread_id_run_id_seq", table_name="run_events")
    op.drop_index("ix_run_events_thread_id_category_seq", table_name="run_events")
    op.drop_table("run_events")
