"""SQLAlchemy Core tables of the record store and the SQL graph store.

The Alembic revisions under `migrations/versions` create exactly these tables; a test compares
the two (autogenerate finds no difference), so change both together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from memsvc.models import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """`timestamp with time zone`; values go in as UTC and always come back aware UTC.

    SQLite keeps no offset, so aware values are converted to UTC and stored naive; naive
    values read back (SQLite) are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = as_utc(value)
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def json_type() -> Any:
    """JSON everywhere, JSONB on PostgreSQL; Python None is stored as SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


# Autoincrement ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


messages = Table(
    "messages",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("id", String(), nullable=False),
    Column("role", String(), nullable=False),
    Column("name", String()),
    Column("content", Text(), nullable=False),
    Column("session_id", String()),
    Column("agent_id", String()),
    Column("timestamp", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant", "user_id", "id"),
)

memories = Table(
    "memories",
    metadata,
    Column("id", String(), primary_key=True),
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("agent_id", String()),
    Column("session_id", String()),
    Column("type", String(), nullable=False),
    Column("content", Text(), nullable=False),
    Column("source_ids", json_type(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("event_time", UTCDateTime()),
    Column("valid_from", UTCDateTime()),
    Column("valid_to", UTCDateTime()),
    Column("importance", Float(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("status", String(), nullable=False),
    Column("metadata", json_type(), nullable=False),
    Column("embedding_model", String()),
    Column("access_count", Integer(), nullable=False),
    Column("last_accessed_at", UTCDateTime()),
    Column("superseded_by", String()),
    Column("written_by", String()),
    # copies of metadata `_episode` / `_turn` (set by the row builder), for the structure lookups
    Column("episode", BigInteger()),
    Column("turn", BigInteger()),
    # listing newest first, per user and per tenant
    Index(None, "tenant", "user_id", "created_at", "id"),
    Index(None, "tenant", "created_at", "id"),
    # an episode's turns, a turn's temporal neighbours
    Index(None, "tenant", "user_id", "episode"),
    Index(None, "tenant", "user_id", "turn"),
    # what changed in a scope since a mark (the merge job)
    Index(None, "tenant", "user_id", "updated_at"),
    # a scope's memories by the skill that wrote them, most important first (the profile job)
    Index(None, "tenant", "user_id", "written_by", "importance"),
    # what changed in a tenant since a mark (incremental reconciliation)
    Index(None, "tenant", "updated_at", "id"),
)

memory_versions = Table(
    "memory_versions",
    metadata,
    Column("memory_id", String(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("tenant", String(), nullable=False),
    Column("snapshot", json_type(), nullable=False),
    Column("change", String(), nullable=False),
    Column("actor", String()),
    Column("changed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("memory_id", "version"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant", String(), nullable=False),
    Column("op", String(), nullable=False),
    Column("payload", json_type(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("last_error", Text()),
    Column("done_at", UTCDateTime()),
    Column("next_at", UTCDateTime()),  # null: the writing request applies it (the drain after a grace)
    Column("dead_at", UTCDateTime()),  # attempts ran out: a dead letter, until revived
    Index(None, "done_at", "id"),
    Index(None, "tenant"),
)

# One row per user scope with data: `version` grows with every committed change of the scope's
# records (a write plans against one version and commits only if it is still current), and
# `graph_version` with every change of its graph rows (a node's graph cache checks it per read).
# A purge deletes the row; a new row starts from the clock, so a version never repeats.
scopes = Table(
    "scopes",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("version", BigInteger(), nullable=False),
    Column("graph_version", BigInteger(), nullable=False),
    # the merge job compared every active derived memory changed up to here (memsvc.lifecycle.consolidate)
    Column("merged_through", UTCDateTime()),
    PrimaryKeyConstraint("tenant", "user_id"),
)

# Per periodic job and tenant: up to when the job has checked the tenant (memsvc.reconcile: the last
# full pass and the last pass over what changed).
job_marks = Table(
    "job_marks",
    metadata,
    Column("kind", String(), nullable=False),
    Column("tenant", String(), nullable=False),
    Column("mark", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("kind", "tenant"),
)

# Per user scope: where episode segmentation stands after the last write (memsvc.lifecycle.episodes),
# committed with that write's turns under the scope version; and one row per episode, whose digest
# columns the consolidation job sets.
episode_state = Table(
    "episode_state",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("episode", BigInteger(), nullable=False),
    Column("turns", Integer(), nullable=False),
    Column("seq", BigInteger(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("last_time", UTCDateTime()),
    Column("last_session", String()),
    Column("last_vector", json_type()),
    Column("last_signals", json_type()),
    Column("sim_mean", Float(), nullable=False),
    Column("sim_var", Float(), nullable=False),
    Column("sim_n", Integer(), nullable=False),
    PrimaryKeyConstraint("tenant", "user_id"),
)

UNDIGESTED = text("digest_turns != turns")  # an episode with turns no digest covers yet

episodes = Table(
    "episodes",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("episode", BigInteger(), nullable=False),
    Column("session_id", String()),
    Column("started_at", UTCDateTime()),
    Column("ended_at", UTCDateTime()),
    Column("turns", Integer(), nullable=False),
    Column("closed_at", UTCDateTime()),
    Column("boundary", String()),
    Column("digest_id", String()),
    Column("digest_turns", Integer(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant", "user_id", "episode"),
    # episodes waiting for a digest (a few per scope), oldest first (the sweep) and per scope (the job):
    # partial, so neither query walks the episodes already digested
    Index("ix_episodes_undigested_updated_at", "updated_at", sqlite_where=UNDIGESTED, postgresql_where=UNDIGESTED),
    Index("ix_episodes_undigested_scope", "tenant", "user_id", "episode",
          sqlite_where=UNDIGESTED, postgresql_where=UNDIGESTED),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(), primary_key=True),
    Column("tenant", String(), nullable=False),
    Column("key_hash", String(), nullable=False, unique=True),
    Column("prefix", String(), nullable=False),
    Column("admin", Boolean(), nullable=False),
    Column("read_only", Boolean(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked", Boolean(), nullable=False),
    Column("expires_at", UTCDateTime()),
    Index(None, "tenant"),
)

# Admin sessions ended by a logout, until they would have expired (ids kept as SHA-256 hashes).
admin_revoked_sessions = Table(
    "admin_revoked_sessions",
    metadata,
    Column("sid_hash", String(), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(), primary_key=True),
    Column("tenant", String(), nullable=False),
    Column("kind", String(), nullable=False),
    Column("state", String(), nullable=False),
    Column("request", json_type(), nullable=False),
    Column("result", json_type()),
    Column("error", json_type()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("run_after", UTCDateTime()),
    Column("pushed_at", UTCDateTime()),
    Column("lease_owner", String()),
    Column("lease_until", UTCDateTime()),
    Index(None, "tenant", "created_at"),
    Index(None, "state", "updated_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant", String(), nullable=False),
    Column("user_id", String()),
    Column("kind", String(), nullable=False),
    Column("payload", json_type(), nullable=False),
    Column("actor", String()),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "tenant", "id"),
    Index(None, "tenant", "user_id", "id"),
)

# Entity-name embeddings of a scope, by a hash of the embedder's model and the name: the scope's name
# index (synonym links, query entity matching) is rebuilt from here instead of by embedding every
# name again after a restart or an eviction from the in-process cache. The retention sweep keeps its
# second embedding of the scope's memory texts here too (model `retention:<embedder>`). No text is
# stored, and a user's purge deletes them with the scope's other rows.
name_vectors = Table(
    "name_vectors",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("key", String(64), nullable=False),  # sha256 of model and name
    Column("vector", LargeBinary(), nullable=False),  # float32, little-endian
    PrimaryKeyConstraint("tenant", "user_id", "key"),
)

# Graph tables: written by the SQL graph store (no foreign keys by design; it manages them).
entities = Table(
    "entities",
    metadata,
    Column("id", String(), primary_key=True),
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("name", String(), nullable=False),
    Column("norm_name", String(), nullable=False),
    Column("label", String()),
    Column("aliases", json_type(), nullable=False),
    Column("mention_count", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "tenant", "user_id", "norm_name"),
)

relations = Table(
    "relations",
    metadata,
    Column("id", String(), primary_key=True),
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("subject_id", String(), nullable=False),
    Column("predicate", String(), nullable=False),
    Column("object_id", String(), nullable=False),
    Column("memory_id", String()),
    Column("valid_from", UTCDateTime()),
    Column("valid_to", UTCDateTime()),
    Column("weight", Float(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "tenant", "user_id"),
    Index(None, "memory_id"),
)

mentions = Table(
    "mentions",
    metadata,
    Column("tenant", String(), nullable=False),
    Column("user_id", String(), nullable=False),
    Column("memory_id", String(), nullable=False),
    Column("entity_id", String(), nullable=False),
    Column("weight", Float(), nullable=False),
    PrimaryKeyConstraint("memory_id", "entity_id"),  # also the memory_id index
    Index(None, "tenant", "user_id"),
    Index(None, "entity_id"),
)

__all__ = [
    "AutoId",
    "UTCDateTime",
    "admin_revoked_sessions",
    "api_keys",
    "entities",
    "episode_state",
    "episodes",
    "events",
    "json_type",
    "memories",
    "memory_versions",
    "mentions",
    "messages",
    "metadata",
    "outbox",
    "relations",
    "scopes",
]
