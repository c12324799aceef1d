"""Initial schema: records (messages, memories, versions, outbox, keys, jobs, events) and graph.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "messages", "memories", "memory_versions", "outbox", "api_keys", "jobs", "events",
    "entities", "relations", "mentions",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _str() -> sa.String:
    return sa.String()


_auto_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str(), nullable=False),
        sa.Column("id", _str(), nullable=False),
        sa.Column("role", _str(), nullable=False),
        sa.Column("name", _str()),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("session_id", _str()),
        sa.Column("agent_id", _str()),
        sa.Column("timestamp", _ts()),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "user_id", "id", name="pk_messages"),
    )

    op.create_table(
        "memories",
        sa.Column("id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str(), nullable=False),
        sa.Column("agent_id", _str()),
        sa.Column("session_id", _str()),
        sa.Column("type", _str(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("source_ids", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("event_time", _ts()),
        sa.Column("valid_from", _ts()),
        sa.Column("valid_to", _ts()),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", _str(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("embedding_model", _str()),
        sa.Column("access_count", sa.Integer(), nullable=False),
        sa.Column("last_accessed_at", _ts()),
        sa.Column("superseded_by", _str()),
        sa.Column("written_by", _str()),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
    )
    op.create_index(
        "ix_memories_tenant_user_id_created_at_id", "memories", ["tenant", "user_id", "created_at", "id"]
    )
    op.create_index("ix_memories_tenant_created_at_id", "memories", ["tenant", "created_at", "id"])

    op.create_table(
        "memory_versions",
        sa.Column("memory_id", _str(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("snapshot", _json(), nullable=False),
        sa.Column("change", _str(), nullable=False),
        sa.Column("actor", _str()),
        sa.Column("changed_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", "version", name="pk_memory_versions"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", _auto_id, autoincrement=True, nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("op", _str(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("done_at", _ts()),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_done_at_id", "outbox", ["done_at", "id"])
    op.create_index("ix_outbox_tenant", "outbox", ["tenant"])

    op.create_table(
        "api_keys",
        sa.Column("id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("key_hash", _str(), nullable=False),
        sa.Column("prefix", _str(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])

    op.create_table(
        "jobs",
        sa.Column("id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("kind", _str(), nullable=False),
        sa.Column("state", _str(), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("result", _json()),
        sa.Column("error", _json()),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_tenant_created_at", "jobs", ["tenant", "created_at"])

    op.create_table(
        "events",
        sa.Column("id", _auto_id, autoincrement=True, nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str()),
        sa.Column("kind", _str(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("actor", _str()),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_tenant_id", "events", ["tenant", "id"])
    op.create_index("ix_events_tenant_user_id_id", "events", ["tenant", "user_id", "id"])

    op.create_table(
        "entities",
        sa.Column("id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str(), nullable=False),
        sa.Column("name", _str(), nullable=False),
        sa.Column("norm_name", _str(), nullable=False),
        sa.Column("label", _str()),
        sa.Column("aliases", _json(), nullable=False),
        sa.Column("mention_count", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entities"),
    )
    op.create_index("ix_entities_tenant_user_id_norm_name", "entities", ["tenant", "user_id", "norm_name"])

    op.create_table(
        "relations",
        sa.Column("id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str(), nullable=False),
        sa.Column("subject_id", _str(), nullable=False),
        sa.Column("predicate", _str(), nullable=False),
        sa.Column("object_id", _str(), nullable=False),
        sa.Column("memory_id", _str()),
        sa.Column("valid_from", _ts()),
        sa.Column("valid_to", _ts()),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_relations"),
    )
    op.create_index("ix_relations_tenant_user_id", "relations", ["tenant", "user_id"])
    op.create_index("ix_relations_memory_id", "relations", ["memory_id"])

    op.create_table(
        "mentions",
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("user_id", _str(), nullable=False),
        sa.Column("memory_id", _str(), nullable=False),
        sa.Column("entity_id", _str(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", "entity_id", name="pk_mentions"),
    )
    op.create_index("ix_mentions_tenant_user_id", "mentions", ["tenant", "user_id"])
    op.create_index("ix_mentions_entity_id", "mentions", ["entity_id"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
