"""Incremental reconciliation: per job and tenant, up to when a periodic job has checked the tenant
(`job_marks`), and an index of a tenant's memories by `updated_at`, so a pass reads only what changed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_marks",
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("mark", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "tenant"),
    )
    op.create_index("ix_memories_tenant_updated_at_id", "memories", ["tenant", "updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_memories_tenant_updated_at_id", table_name="memories")
    op.drop_table("job_marks")
