"""Jobs carry their run state: attempts, a retry time, when they were last queued, and a lease.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `attempts` gets a server default so existing rows fill in; the rest are nullable.
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    for name in ("run_after", "pushed_at", "lease_until"):
        op.add_column("jobs", sa.Column(name, sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("lease_owner", sa.String()))
    op.create_index("ix_jobs_state_updated_at", "jobs", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_updated_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("attempts", "run_after", "pushed_at", "lease_until", "lease_owner"):
            batch.drop_column(name)
