"""Domain model: memory cubes, stored messages, versions, outbox entries, keys, jobs."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def pseudonym(tenant: str, user_id: str) -> str:
    """A stable stand-in for a user in audit records that must not name them (SHA-256, 16 hex):
    whoever knows the user id can check that a record is about them; nobody can read it off."""
    return "sha256:" + hashlib.sha256(f"{tenant}\x00{user_id}".encode()).hexdigest()[:16]


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class MemoryType(StrEnum):
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    PROCEDURAL = "procedural"
    REFINED = "refined"


class MemoryStatus(StrEnum):
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ARCHIVED = "archived"
    DELETED = "deleted"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class StoredMessage(BaseModel):
    """A message as received, kept so that provenance can show it."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    user_id: str
    id: str
    role: Role
    content: str
    name: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    timestamp: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


# Reserved metadata: keys starting with RESERVED_PREFIX belong to the server; clients may not write them.
RESERVED_PREFIX = "_"

SPEAKER_KEY = "_speaker"
"""Metadata key of an episodic cube: who "I" is in it (the message's name, else its role)."""

SLOT_KEY = "_slot"
"""Metadata key of a fact: the single-valued slot it sets; a newer value of the slot supersedes the older."""

REASON_KEY = "_reason"
"""Metadata key of a memory an agent or an LLM executor inserted, updated or deleted: the reason it gave."""

EPISODE_KEY = "_episode"
"""Metadata key of an episodic cube: the episode (segment of the conversation) it belongs to.
Cubes written before the reserved namespace carry it as `episode`. Episode numbers are stable per
user scope across requests (`EpisodeState`); a digest carries the number of the episode it digests."""

TURN_KEY = "_turn"
"""Metadata key of an episodic cube: its position in the user scope's stream of turns (0, 1, …), the
order temporal-neighbour expansion walks (messages of one LoCoMo session share a timestamp)."""

DIGEST_KEY = "_digest"
"""Metadata key of an episode digest (the consolidation job's first level of two-level recall): True."""

PROFILE_KEY = "_profile"
"""Metadata key of a user's profile (refined): True on the one active profile and its superseded versions."""

MERGED_KEY = "_merged"
"""Metadata key of a canonical memory: the ids of the near-duplicates merged into it (each superseded by it)."""


RETENTION_KEY = "_retention"
"""Metadata key of a memory the retention sweep archived: the policy, its score, the budget and when."""


class MemoryCube(BaseModel):
    """One unit of memory: content plus type, scope, provenance, validity and lifecycle."""

    id: str = Field(default_factory=new_id)
    tenant: str
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    type: MemoryType
    content: str
    source_ids: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    importance: float = 0.5
    version: int = 1
    status: MemoryStatus = MemoryStatus.ACTIVE
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding_model: str | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    superseded_by: str | None = None
    written_by: str | None = None

    def public(self) -> dict[str, Any]:
        """The `Memory` object of the REST contract."""
        return {
            "id": self.id,
            "type": self.type.value,
            "content": self.content,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "source_ids": list(self.source_ids),
            "created_at": _iso(self.created_at),
            "event_time": _iso(self.event_time),
            "valid_from": _iso(self.valid_from),
            "valid_to": _iso(self.valid_to),
            "importance": self.importance,
            "version": self.version,
            "status": self.status.value,
            "metadata": dict(self.metadata),
        }

    def valid_at(self, when: datetime) -> bool:
        """True when the cube's validity interval [valid_from, valid_to) holds `when` (valid time).

        Recording time (`created_at`) is not consulted: history imported today is still
        true as of the dates it describes.
        """
        if self.valid_from is not None and self.valid_from > when:
            return False
        return self.valid_to is None or self.valid_to > when


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SUPERSEDE = "supersede"
    DELETE = "delete"
    RESTORE = "restore"
    ARCHIVE = "archive"


class MemoryVersion(BaseModel):
    """A snapshot of a cube as it was at one version, and what changed it."""

    memory_id: str
    version: int
    snapshot: dict[str, Any]
    change: ChangeKind
    actor: str | None = None
    changed_at: datetime = Field(default_factory=utcnow)


class OutboxOp(StrEnum):
    """What an outbox entry makes a derived store do. Every op converges the store on what SQL holds
    when it runs (see `memsvc.indexer`), so a late, repeated or reordered run does no harm."""

    UPSERT_VECTORS = "upsert_vectors"
    DELETE_VECTORS = "delete_vectors"
    SET_STATUS = "set_status"
    INDEX_GRAPH = "index_graph"
    DELETE_GRAPH = "delete_graph"
    REINDEX_GRAPH = "reindex_graph"
    PURGE_SCOPE = "purge_scope"


class OutboxEntry(BaseModel):
    """A pending change to a derived store (vectors, graph), committed with the SQL write.

    `next_at` None: the request that committed the entry applies it, and the outbox drain takes it
    over only after its grace period (a crash in between); a time: the drain applies it then (a
    retry after backoff, or work deferred off the request). `dead_at`: the attempts ran out."""

    id: int | None = None
    tenant: str
    op: OutboxOp
    payload: dict[str, Any]
    created_at: datetime = Field(default_factory=utcnow)
    attempts: int = 0
    next_at: datetime | None = None
    dead_at: datetime | None = None
    last_error: str | None = None

    @property
    def memory_ids(self) -> list[str]:
        ids = self.payload.get("ids")
        return [str(i) for i in ids] if isinstance(ids, list) else []

    @property
    def scope(self) -> tuple[str, str]:
        return self.tenant, str(self.payload.get("user_id", ""))


class EpisodeState(BaseModel):
    """Where a user scope's segmentation stands after its last write (`memsvc.lifecycle.episodes`):
    the open episode, the last turn's time, session and embedding, and the running baseline of the
    similarity between consecutive turns that surprise is measured against."""

    tenant: str
    user_id: str
    episode: int = -1  # the open episode (-1: no turn yet)
    turns: int = 0  # turns in the open episode
    seq: int = 0  # turns in the scope so far (a turn's `TURN_KEY` is its position)
    started_at: datetime | None = None  # the open episode's first turn
    last_time: datetime | None = None
    last_session: str | None = None
    last_vector: list[float] | None = None
    last_signals: list[float] | None = None  # the last turn's `write_features` (the write gate reads them)
    sim_mean: float = 0.0
    sim_var: float = 0.0
    sim_n: int = 0


class Episode(BaseModel):
    """One episode of a user scope: a run of turns cut by a session change, a time gap or surprise."""

    tenant: str
    user_id: str
    episode: int
    session_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    turns: int = 0
    closed_at: datetime | None = None  # set when a later turn opened the next episode
    boundary: str | None = None  # what closed it: "session", "gap" or "surprise"
    digest_id: str | None = None  # the digest memory, once the consolidation job wrote it
    digest_turns: int = 0  # turns the digest covers (0: none yet; `turns`: up to date)
    updated_at: datetime = Field(default_factory=utcnow)  # the last write that touched it


class ApiKey(BaseModel):
    id: str = Field(default_factory=new_id)
    tenant: str
    key_hash: str
    prefix: str
    admin: bool = False
    read_only: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    revoked: bool = False
    expires_at: datetime | None = None

    def usable(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired."""
        expires = as_utc(self.expires_at)
        return not self.revoked and (expires is None or expires > (now or utcnow()))


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


SYSTEM_TENANT = "_system"
"""Tenant of the job runner's own periodic jobs. No API key can belong to it: tenants starting with
`RESERVED_PREFIX` are refused when a key is created."""


class Job(BaseModel):
    """A unit of background work (a `wait: false` write, a periodic sweep …), stored before it is queued.

    The row is the truth: a worker runs a job only after claiming it here (state `running` with a
    lease), so two workers never run it at once, and a crashed worker's job is claimed again once its
    lease runs out."""

    id: str = Field(default_factory=new_id)
    tenant: str
    kind: str
    state: JobState = JobState.PENDING
    request: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    attempts: int = 0  # claims so far (a run that crashed counts)
    run_after: datetime | None = None  # a retry waits until then
    pushed_at: datetime | None = None  # last handed to the queue
    lease_owner: str | None = None  # the worker running it
    lease_until: datetime | None = None


class EventLog(BaseModel):
    """A logged write, recall, feedback or admin action (training signal and audit trail)."""

    id: int | None = None
    tenant: str
    user_id: str | None
    kind: str
    payload: dict[str, Any]
    actor: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Entity(BaseModel):
    """A node of the knowledge graph inside one user scope."""

    id: str
    tenant: str
    user_id: str
    name: str
    label: str | None = None
    aliases: list[str] = Field(default_factory=list)
    mention_count: int = 0


class Relation(BaseModel):
    """A subject–predicate–object fact between two entities, with a validity interval."""

    id: str = Field(default_factory=new_id)
    tenant: str
    user_id: str
    subject_id: str
    predicate: str
    object_id: str
    memory_id: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    weight: float = 1.0


class Mention(BaseModel):
    """A memory mentions an entity."""

    tenant: str
    user_id: str
    memory_id: str
    entity_id: str
    weight: float = 1.0


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
