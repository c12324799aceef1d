"""Small protocols the engine depends on; `storage/` implements them.

Every method takes the tenant explicitly: a store never guesses the scope.
All calls are synchronous; the API runs them in its thread pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel

from memsvc.models import (
    ApiKey,
    ChangeKind,
    Entity,
    Episode,
    EpisodeState,
    EventLog,
    Job,
    JobState,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    MemoryVersion,
    Mention,
    OutboxEntry,
    OutboxOp,
    Relation,
    StoredMessage,
)
from memsvc.skills.cards import SkillCard
from memsvc.skills.types import SkillContext, SkillResult, Span

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class MemoryQuery(BaseModel):
    """Listing filter for `RecordStore.list_memories` (newest first, keyset cursor)."""

    user_id: str | None = None
    types: list[MemoryType] | None = None
    statuses: list[MemoryStatus] | None = None
    text: str | None = None  # case-insensitive substring of content
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 50
    cursor: str | None = None


class ScopeStats(BaseModel):
    tenant: str
    user_id: str
    counts: dict[str, int]  # memory type -> active count
    total: int
    archived: int = 0
    bytes: int  # content bytes of all non-deleted memories
    last_write: datetime | None = None


class UnitOfWork(Protocol):
    """Writes staged here commit together when the `with` block exits cleanly."""

    def add_messages(self, messages: Sequence[StoredMessage]) -> None: ...

    def insert_memories(self, cubes: Sequence[MemoryCube], *, actor: str | None = None) -> None:
        """Insert new cubes and record each one's version-1 snapshot (change=create)."""

    def import_memories(self, cubes: Sequence[MemoryCube], versions: Sequence[MemoryVersion]) -> None:
        """Insert cubes together with their recorded history, unchanged (lossless import)."""

    def save_memory(self, cube: MemoryCube, change: ChangeKind, *, actor: str | None = None) -> None:
        """Overwrite the cube's row with `cube` (caller has bumped `version`) and append its snapshot."""

    def guard_scope(self, tenant: str, user_id: str, expected: int | None) -> None:
        """Commit only if the scope's version is still `expected` (None: no version yet), and bump
        it; otherwise the commit raises `ScopeChanged` and nothing is written. Stage it first."""

    def touch_scope(self, tenant: str, user_id: str) -> None:
        """Bump the scope's version, whatever it is."""

    def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        """Stage outbox entries; each entry's `id` is set once the rows are flushed."""

    def log(self, events: Sequence[EventLog]) -> None: ...

    def save_episodes(self, state: EpisodeState, episodes: Sequence[Episode]) -> None:
        """Store the scope's segmentation state and upsert the episode rows a write touched (their
        digest columns are left as they are)."""

    def mark_digested(self, tenant: str, user_id: str, episode: int, turns: int, digest_id: str | None,
                      *, expected: int) -> None:
        """Record that the episode's first `turns` turns are digested (by `digest_id`, None: too short),
        if its digest still covers `expected` turns; else the commit raises `Conflict` (another run
        digested it meanwhile) and nothing is written. Stage it first."""

    def set_merge_mark(self, tenant: str, user_id: str, at: datetime | None, *, expected: int | None) -> None:
        """The merge job compared every active derived memory of the scope changed up to `at` (None:
        nothing is known to be compared, e.g. after an import of older memories). With
        `expected`, the mark is kept only while the scope is still at that version (which it does not
        bump), else silently not; None sets it unconditionally (a unit of work that guards the scope)."""


class RecordStore(Protocol):
    """The source of truth: messages, cubes, versions, outbox, keys, jobs, logs."""

    def migrate(self) -> None:
        """Bring the schema to the newest revision."""

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]: ...

    def known_message_ids(self, tenant: str, user_id: str, ids: Sequence[str]) -> set[str]: ...

    def get_messages(self, tenant: str, user_id: str, ids: Sequence[str]) -> list[StoredMessage]: ...

    def get_memory(self, tenant: str, memory_id: str) -> MemoryCube | None: ...

    def get_memories(self, tenant: str, ids: Sequence[str]) -> list[MemoryCube]:
        """Cubes in the order of `ids`; unknown ids and other tenants' ids are skipped."""

    def list_memories(self, tenant: str, query: MemoryQuery) -> Page[MemoryCube]: ...

    def iter_memories(self, tenant: str, user_id: str | None = None) -> Iterator[MemoryCube]: ...

    def changed_memories(self, tenant: str, user_id: str, since: datetime | None,
                         types: Sequence[MemoryType]) -> Iterator[MemoryCube]:
        """Active cubes of `types` in the scope updated after `since` (all of them for None), by
        `updated_at`, fetched in batches: what the merge job compares since its last mark."""

    def ranked_memories(self, tenant: str, user_id: str, written_by: Sequence[str], limit: int) -> list[MemoryCube]:
        """The scope's active memories written by these skills, at most `limit`: the most important
        first, then the newest by `valid_from` (else `created_at`), then by id (the profile's order)."""

    def changed_memory_states(self, tenant: str, since: datetime) -> Iterator[tuple[str, str, str]]:
        """(id, status, user_id) of the tenant's memories updated after `since`, any status, oldest
        change first, read in pages (incremental reconciliation)."""

    def job_mark(self, kind: str, tenant: str) -> datetime | None:
        """Up to when the periodic job `kind` has checked the tenant (None: never)."""

    def set_job_mark(self, kind: str, tenant: str, at: datetime) -> None: ...

    def merge_mark(self, tenant: str, user_id: str) -> datetime | None:
        """Up to when the merge job has compared the scope's memories (`UnitOfWork.set_merge_mark`)."""

    def memory_states(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """id -> (status, user_id) of the tenant's memories among `ids`: what reconciliation
        compares with the vector index, without loading whole memories."""

    def iter_memory_states(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        """(id, status, user_id) of every memory of the tenant, oldest first, in batches."""

    def history(self, tenant: str, memory_id: str) -> list[MemoryVersion]:
        """All snapshots of a cube, oldest first."""

    def record_access(self, tenant: str, ids: Sequence[str], at: datetime, *, times: int = 1) -> None:
        """Add `times` to each memory's access count; `last_accessed_at` becomes `at` unless later."""

    def purge_user(self, tenant: str, user_id: str) -> dict[str, int]:
        """Delete every row of the scope (messages, memories, versions, logs, jobs); counts per table."""

    def scope_version(self, tenant: str, user_id: str) -> int | None:
        """The scope's version: it changes with every committed change of its records."""

    def slot_holders(self, tenant: str, user_id: str, slot: str, types: Sequence[MemoryType]) -> list[MemoryCube]:
        """Active cubes of `types` in the scope whose metadata sets the single-valued `slot`."""

    def unindexed_memory_ids(self, tenant: str, user_id: str) -> set[str]:
        """Memories of the scope with a vector-index change not done yet (pending, retrying, dead)."""

    def scrub(self) -> None:
        """Make rows deleted so far unrecoverable from the store's own files (e.g. a WAL)."""

    def pending_outbox(self, limit: int = 100, *, after: int | None = None) -> list[OutboxEntry]:
        """Entries not done and not dead, oldest first (ids above `after`)."""

    def due_outbox(
        self, now: datetime, fresh_before: datetime, limit: int = 100, *, ops_now: Sequence[OutboxOp] = (),
    ) -> list[OutboxEntry]:
        """Entries to apply now, oldest first: `next_at <= now`, or unscheduled and either created
        before `fresh_before` (their request did not apply them) or of an op in `ops_now`."""

    def complete_outbox(self, ids: Sequence[int]) -> None: ...

    def fail_outbox(self, entry_id: int, error: str, *, retry_at: datetime | None = None) -> None:
        """Count a failed attempt: retried from `retry_at`, or a dead letter when it is None."""

    def dead_outbox(self, limit: int = 100, *, tenant: str | None = None) -> list[OutboxEntry]:
        """Dead letters, newest first: all of them, or one tenant's."""

    def revive_outbox(self, ids: Sequence[int] | None = None, *, tenant: str | None = None) -> int:
        """Dead entries (these, or all; of one tenant, or any) get fresh attempts, due now; how many."""

    def outbox_stats(self, now: datetime) -> dict[str, Any]:
        """`pending`, `retrying`, `dead` counts and `oldest_age_s` of the oldest live entry."""

    def prune_outbox(self, done_before: datetime) -> int: ...

    def add_key(self, key: ApiKey) -> None: ...

    def key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Keys of the tenant (or all), oldest first."""

    def update_key(self, key: ApiKey) -> None:
        """Store the key's `revoked` and `expires_at`; an unknown id raises `NotFound`."""

    def revoke_session(self, sid_hash: str, expires_at: datetime) -> None:
        """Record a logged-out admin session until `expires_at` (expired records are dropped)."""

    def session_revoked(self, sid_hash: str) -> bool: ...

    def save_job(self, job: Job) -> None: ...

    def create_job(self, job: Job) -> bool:
        """Insert the job unless its id exists already (any tenant); whether it was inserted."""

    def get_job(self, tenant: str, job_id: str) -> Job | None: ...

    def unfinished_jobs(self) -> list[Job]:
        """Jobs of every tenant still pending or running, oldest first."""

    def count_jobs(self, states: Sequence[JobState], *, kind: str | None = None) -> int: ...

    def claim_job(self, job_id: str, owner: str, lease_until: datetime, now: datetime) -> Job | None:
        """Atomically make `owner` the runner of the job (state `running`, attempts + 1) when it is
        pending and due, or running under a lease that ran out before `now`; else None."""

    def renew_job(self, job_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend the lease; False when `owner` no longer holds the job."""

    def finish_job(self, job: Job, owner: str) -> bool:
        """Store the job's outcome (`state`, `result`, `error`, `run_after`, `attempts`) and drop the
        lease, only while `owner` holds it; False when another worker took it over."""

    def release_jobs(self, owner: str, job_ids: Sequence[str] | None = None) -> int:
        """Hand the owner's running jobs (all, or those of `job_ids`) back: pending, the interrupted
        attempt not counted."""

    def due_jobs(self, now: datetime, pushed_before: datetime, limit: int) -> list[str]:
        """Ids, oldest first, of jobs to hand to the queue: pending, due, and not pushed since
        `pushed_before`; or running under a lease that ran out before `now`."""

    def mark_pushed(self, ids: Sequence[str], at: datetime) -> None: ...

    def prune_jobs(self, tenant: str, finished_before: datetime) -> int:
        """Delete the tenant's done and failed jobs last updated before the time; how many."""

    def events(
        self, tenant: str, *, user_id: str | None = None, kinds: Sequence[str] | None = None,
        limit: int = 100, cursor: str | None = None,
    ) -> Page[EventLog]: ...

    def scope_stats(self, tenant: str | None = None) -> list[ScopeStats]: ...

    def count_status(self, tenant: str, status: MemoryStatus, user_id: str | None = None) -> int:
        """Memories of the tenant (or scope) in `status` (one indexed count, for budget checks)."""

    def tenants(self) -> list[str]: ...

    # -- episodes and lifecycle (memsvc.lifecycle) ------------------------------------------
    def episode_state(self, tenant: str, user_id: str) -> EpisodeState | None:
        """The scope's segmentation state after its last write (None before its first turn)."""

    def episodes(self, tenant: str, user_id: str, numbers: Sequence[int] | None = None) -> list[Episode]:
        """The scope's episodes (those numbered `numbers`, else all), in order."""

    def undigested_episodes(self, idle_before: datetime, limit: int = 500, *,
                            scope: tuple[str, str] | None = None) -> list[Episode]:
        """Episodes with turns no digest covers yet that are closed or were last written before
        `idle_before`: across tenants, oldest first; or of one (tenant, user) `scope`, in order.
        Indexed: the cost follows the episodes waiting, not the scope's size."""

    def episode_turns(self, tenant: str, user_id: str, episodes: Sequence[int]) -> list[MemoryCube]:
        """The active episodic turns of these episodes, in stream order."""

    def adjacent_turns(self, tenant: str, user_id: str, turn: int, k: int) -> list[MemoryCube]:
        """The active episodic turns numbered `turn - k` to `turn + k` in the scope's stream, in order."""

    def status_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Memories per lifecycle status (of a tenant, else all)."""

    def job_counts(self, tenant: str | None = None) -> list[tuple[str, str, int]]:
        """(kind, state, count) of the stored jobs of a tenant, else of all."""

    def recent_jobs(self, tenant: str | None = None, *, kinds: Sequence[str] | None = None, limit: int = 50) -> list[Job]:
        """The most recently updated jobs (of a tenant, of `kinds`), newest first."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class VectorPayload:
    """What the vector index stores beside each vector, for filtering; `digest` is the
    `text_digest` of the text the vector embeds, so that a reader can tell a current vector from
    one of an earlier version of the memory."""

    tenant: str
    user_id: str
    type: MemoryType
    status: MemoryStatus
    created_at: datetime
    agent_id: str | None = None
    session_id: str | None = None
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None


def text_digest(text: str) -> str:
    """A short digest of a memory's text (the vector payload's `digest`)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class VectorPoint:
    id: str  # the memory id (a UUID string)
    vector: Sequence[float]
    text: str  # indexed for keyword (BM25) search
    payload: VectorPayload


@dataclass(frozen=True)
class VectorFilter:
    """Conditions pushed down into the index; all given conditions must hold."""

    tenant: str
    user_id: str | None = None
    types: Sequence[MemoryType] | None = None
    statuses: Sequence[MemoryStatus] | None = None
    agent_id: str | None = None
    session_id: str | None = None
    valid_at: datetime | None = None  # valid_from <= t (or none) and valid_to > t (or none)
    event_from: datetime | None = None  # event_time >= event_from
    event_to: datetime | None = None  # event_time < event_to
    metadata: dict[str, str | int | float | bool] | None = None  # exact match per key
    ids: Sequence[str] | None = None


@dataclass(frozen=True)
class PointState:
    """What reconciliation compares with SQL: a stored point's scope and status."""

    id: str
    tenant: str
    user_id: str
    status: str
    digest: str | None = None  # the payload's `digest` (None: stored before digests were)


class VectorIndex(Protocol):
    """Dense and keyword search over memory points, filtered by payload."""

    def upsert(self, points: Sequence[VectorPoint]) -> None: ...

    def set_payload(self, items: Sequence[tuple[str, VectorPayload]]) -> None:
        """Replace the payload of existing points (ids not present are ignored)."""

    def delete(self, ids: Sequence[str]) -> None: ...

    def delete_scope(self, tenant: str, user_id: str) -> None: ...

    def search(self, vector: Sequence[float], flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        """Nearest points by cosine similarity, best first."""

    def search_text(self, text: str, flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        """BM25 keyword ranking over the points' texts, best first; empty when nothing matches."""

    def count(self, flt: VectorFilter) -> int: ...

    def scan(self, flt: VectorFilter, limit: int, cursor: str | None = None) -> tuple[list[PointState], str | None]:
        """Points matching `flt`, `limit` at a time in the index's id order; the next page's cursor
        (None after the last page)."""

    def states(self, ids: Sequence[str]) -> dict[str, PointState]:
        """The points among `ids` that the index holds."""

    def vectors(self, ids: Sequence[str]) -> dict[str, tuple[str | None, np.ndarray]]:
        """The dense vectors (float32) of the points among `ids`, each with its payload's `digest`
        (None for a point stored without one)."""

    def flush(self) -> None: ...

    def compact(self) -> None:
        """Drop what deleted points leave on disk (after a purge); a backend whose engine vacuums
        on its own does nothing."""

    def close(self) -> None: ...


VectorsOf = Callable[[Sequence[MemoryCube]], np.ndarray]
"""Memories -> their embeddings (one row each, in order), read where they are stored, embedded where not."""


class Embedder(Protocol):
    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 matrix, one row per text (documents)."""

    def embed_query(self, text: str) -> np.ndarray:
        """L2-normalised float32 vector for a query."""


@dataclass(frozen=True)
class GraphSnapshot:
    """A scope's graph as matrices for algorithms.

    `adjacency` is entity x entity (symmetric, weighted); `mentions` is memory x entity.
    """

    entity_ids: list[str]
    memory_ids: list[str]
    adjacency: Any  # scipy.sparse.csr_matrix
    mentions: Any  # scipy.sparse.csr_matrix
    # Display names aligned with `entity_ids` (empty when a store does not fill them).
    entity_names: list[str] = field(default_factory=list)
    # The relations behind `adjacency`, with predicates and validity (for as_of and supersession).
    relations: list[Relation] = field(default_factory=list)


@dataclass(frozen=True)
class GraphCatalog:
    """A scope's entities and relations without the matrices: what the write path reads
    (supersession, synonym links), cheap to hand out after every write."""

    entity_ids: list[str]
    entity_names: list[str]  # aligned with `entity_ids` (empty when a store does not fill them)
    relations: list[Relation]


class GraphStore(Protocol):
    """Entities, relations and memory mentions of each user scope."""

    def upsert(
        self, tenant: str, user_id: str, entities: Sequence[Entity],
        relations: Sequence[Relation], mentions: Sequence[Mention],
    ) -> None: ...

    def entities(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Entity]: ...

    def relations(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Relation]: ...

    def entities_of(self, tenant: str, memory_ids: Sequence[str]) -> dict[str, list[Entity]]: ...

    def find_entities(self, tenant: str, user_id: str, names: Sequence[str]) -> list[Entity]:
        """Entities whose normalised name or alias equals one of `names` (normalised)."""

    def snapshot(self, tenant: str, user_id: str) -> GraphSnapshot: ...

    def catalog(self, tenant: str, user_id: str) -> GraphCatalog: ...

    def delete_memories(self, tenant: str, memory_ids: Sequence[str]) -> None: ...

    def delete_scope(self, tenant: str, user_id: str) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLM(Protocol):
    """An OpenAI-compatible chat model."""

    model: str

    def complete(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 512,
        temperature: float = 0.0, json_mode: bool = False,
    ) -> Completion: ...


@dataclass(frozen=True)
class Delivery:
    """A job id handed to one consumer; `token` is the queue's handle for `ack` and `touch`."""

    job_id: str
    token: str


class JobQueue(Protocol):
    """Delivers job ids to workers, at least once: a delivery not acknowledged within the lease
    goes to a consumer again. The jobs themselves are rows of the `RecordStore`, which decides who
    runs a job (`claim_job`), so a duplicate delivery is harmless."""

    durable: bool  # whether pushed ids outlive this process (an in-process queue's do not)

    def push(self, job_ids: Sequence[str]) -> None: ...

    def pull(self, consumer: str, timeout_s: float) -> Delivery | None:
        """The next delivery for `consumer`, or None after `timeout_s`."""

    def ack(self, delivery: Delivery) -> None: ...

    def touch(self, delivery: Delivery) -> None:
        """Restart the delivery's lease (the job is still running)."""

    def depth(self) -> int:
        """Deliveries waiting or in flight."""

    def close(self) -> None: ...


class GateModel(Protocol):
    """The learned gates (ARCHITECTURE §6): read gate / reranker (with its query adapter), query
    router, write gate.

    Batched and stateless per call, so one GPU-hosted worker can serve several API nodes
    (`memsvc gates serve`); a head an artefact lacks answers `has(head) == False`.
    """

    def has(self, head: str) -> bool:
        """Whether the loaded artefact carries `head` ("rerank", "query", "second", "write", "route"; "cross"
        when the cross-encoder stage's artefact is loaded too)."""

    def rerank(self, lists: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One score vector per candidate list (rows: `memsvc.learn.features.RERANK_FEATURES`)."""

    def adapt(self, queries: np.ndarray) -> np.ndarray:
        """Query embeddings (rows) moved by the read gate's query adapter, unit length ("query" head)."""

    def project(self, queries: np.ndarray) -> np.ndarray:
        """Query embeddings (rows) projected into the second embedder's space, unit length ("second"
        head): what the read gate's e5 cosines are taken against instead of embedding the query with e5."""

    def cross(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The cross-encoder stage's logit per text ("cross" head): the query and each memory read together
        (texts as `memsvc.learn.cross.memory_text` writes them); higher is more likely evidence."""

    def memorability(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        """P(the message is needed later) per row (embedding + `WRITE_GATE_FEATURES` side features)."""

    def route(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Per query, one probability per retriever of `memsvc.learn.features.ROUTES`."""

    def describe(self) -> dict[str, Any]:
        """The loaded artefact's manifest (name, version, date, data checksums, metrics) and device."""

    def close(self) -> None: ...


class SkillExecutor(Protocol):
    """Applies a skill card to spans and returns operations (ARCHITECTURE §2 step 5).

    `key` is what cards name: `offline:<handler>` for a built-in handler, `llm`, `agent`. The
    card's `parameters` drive the executor, so nothing in an executor names a skill."""

    key: str

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult: ...


class SkillController(Protocol):
    """Chooses the skills each span gets (ARCHITECTURE §2 step 4), from the cards offered."""

    name: str

    def select(self, spans: Sequence[Span], embeddings: np.ndarray, cards: Sequence[SkillCard]) -> list[list[str]]:
        """Per span (rows of `embeddings` are the spans' episodic embeddings), the ids of the skills to run."""

    def describe(self) -> dict[str, Any]:
        """What is loaded (kind; for a learned policy its manifest and measured reward)."""
