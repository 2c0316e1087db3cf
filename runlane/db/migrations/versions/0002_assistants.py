"""Assistants: the ``assistants`` and ``assistant_versions`` tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Written out in full rather than importing ``runlane.db.tables``, so this
revision keeps creating exactly this schema when the tables module evolves.
The ``threads`` table of 0001 is used as it is.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _version_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("graph_id", sa.String(255), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("context", _json(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("description", sa.Text()),
    ]


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("assistant_id", sa.String(128), nullable=False),
        *_version_columns(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("assistant_id", name="pk_assistants"),
    )
    op.create_index("ix_assistants_graph_id", "assistants", ["graph_id"])

    op.create_table(
        "assistant_versions",
        sa.Column("assistant_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_version_columns(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("assistant_id", "version", name="pk_assistant_versions"),
        sa.ForeignKeyConstraint(
            ["assistant_id"],
            ["assistants.assistant_id"],
            name="fk_assistant_versions_assistant_id_assistants",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("assistant_versions")
    op.drop_index("ix_assistants_graph_id", table_name="assistants")
    op.drop_table("assistants")
