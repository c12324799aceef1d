"""The merge job's mark per scope (`scopes.merged_through`) and an index of a scope's memories by
`updated_at`: the job compares what changed since its last run instead of every pair of the scope.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scopes") as batch:
        batch.add_column(sa.Column("merged_through", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_memories_tenant_user_id_updated_at", "memories", ["tenant", "user_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_memories_tenant_user_id_updated_at", table_name="memories")
    with op.batch_alter_table("scopes") as batch:
        batch.drop_column("merged_through")
