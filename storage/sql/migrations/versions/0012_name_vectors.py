"""A scope's entity-name embeddings kept in SQL (`name_vectors`), keyed by a hash of the embedder's
model and the name (no name text): the scope's name index is rebuilt from them after a restart or
an eviction from the in-process cache, instead of embedding every entity name of the scope again.
Empty after the upgrade: names are stored as they are next embedded. A user's purge deletes them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "name_vectors",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "user_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("name_vectors")
