"""Episodes: per-scope segmentation state (`episode_state`) and one row per episode (`episodes`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "episode_state",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("episode", sa.BigInteger(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_session", sa.String(), nullable=True),
        sa.Column("last_vector", json_type(), nullable=True),
        sa.Column("sim_mean", sa.Float(), nullable=False),
        sa.Column("sim_var", sa.Float(), nullable=False),
        sa.Column("sim_n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "user_id", name="pk_episode_state"),
    )
    op.create_table(
        "episodes",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("episode", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("boundary", sa.String(), nullable=True),
        sa.Column("digest_id", sa.String(), nullable=True),
        sa.Column("digest_turns", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "user_id", "episode", name="pk_episodes"),
    )
    op.create_index("ix_episodes_digest_turns_updated_at", "episodes", ["digest_turns", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_episodes_digest_turns_updated_at", table_name="episodes")
    op.drop_table("episodes")
    op.drop_table("episode_state")
