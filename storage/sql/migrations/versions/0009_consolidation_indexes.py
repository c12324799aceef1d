"""Indexes for the consolidation jobs, so neither reads a whole scope: episodes waiting for a digest
(partial: only the few not yet digested, by age for the sweep and per scope for the job; they replace
the index on `(digest_turns, updated_at)`, which the `digest_turns != turns` test could not use) and a
scope's memories by the skill that wrote them and importance (the profile lists the top facts).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDIGESTED = sa.text("digest_turns != turns")


def upgrade() -> None:
    op.drop_index("ix_episodes_digest_turns_updated_at", table_name="episodes")
    op.create_index("ix_episodes_undigested_updated_at", "episodes", ["updated_at"],
                    sqlite_where=UNDIGESTED, postgresql_where=UNDIGESTED)
    op.create_index("ix_episodes_undigested_scope", "episodes", ["tenant", "user_id", "episode"],
                    sqlite_where=UNDIGESTED, postgresql_where=UNDIGESTED)
    op.create_index("ix_memories_tenant_user_id_written_by_importance", "memories",
                    ["tenant", "user_id", "written_by", "importance"])


def downgrade() -> None:
    op.drop_index("ix_memories_tenant_user_id_written_by_importance", table_name="memories")
    op.drop_index("ix_episodes_undigested_scope", table_name="episodes")
    op.drop_index("ix_episodes_undigested_updated_at", table_name="episodes")
    op.create_index("ix_episodes_digest_turns_updated_at", "episodes", ["digest_turns", "updated_at"])
