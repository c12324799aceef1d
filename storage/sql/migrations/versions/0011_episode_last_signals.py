"""The write gate reads the turn before: the scope's last turn's `write_features` beside its vector
in `episode_state` (NULL for a scope last written before this revision: its next turn is scored
without a previous one, as a scope's first turn is).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.add_column("episode_state", sa.Column("last_signals", json_type(), nullable=True))


def downgrade() -> None:
    op.drop_column("episode_state", "last_signals")
