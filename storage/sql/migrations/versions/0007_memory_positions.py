"""An episodic memory's episode and position in its scope's stream as indexed columns (`episode`,
`turn`), copied from `metadata._episode` / `metadata._turn`: the structure lookups of recall (the turns
of an episode, temporal neighbours) and the digest job found them by scanning the scope's JSON.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("memories") as batch:
        batch.add_column(sa.Column("episode", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("turn", sa.BigInteger(), nullable=True))
    memories = sa.table("memories", sa.column("metadata", json_type()), sa.column("episode", sa.BigInteger()),
                        sa.column("turn", sa.BigInteger()))
    meta = memories.c["metadata"]
    # `_episode` and `_turn` are reserved keys only the service writes (integers)
    op.execute(memories.update().values(episode=meta["_episode"].as_integer(), turn=meta["_turn"].as_integer()))
    op.create_index("ix_memories_tenant_user_id_episode", "memories", ["tenant", "user_id", "episode"])
    op.create_index("ix_memories_tenant_user_id_turn", "memories", ["tenant", "user_id", "turn"])


def downgrade() -> None:
    op.drop_index("ix_memories_tenant_user_id_turn", table_name="memories")
    op.drop_index("ix_memories_tenant_user_id_episode", table_name="memories")
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("turn")
        batch.drop_column("episode")
