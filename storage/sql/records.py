"""`SqlRecordStore`: the `RecordStore` port on SQLAlchemy Core (SQLite or PostgreSQL).

Every call takes its own pooled connection and transaction, so one store serves many threads.
A unit of work stages its writes and runs them in one write transaction when the `with` block
exits cleanly (on SQLite the write lock is held only for that short flush).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from alembic import command
from sqlalchemy import (
    ColumnElement,
    Engine,
    LargeBinary,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.engine import Connection, Row

from memsvc.errors import InvalidInput, NotFound
from memsvc.models import (
    SLOT_KEY,
    ApiKey,
    ChangeKind,
    EventLog,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    MemoryVersion,
    OutboxEntry,
    OutboxOp,
    StoredMessage,
    as_utc,
    utcnow,
)
from memsvc.ports import MemoryQuery, Page, ScopeStats
from storage.sql import schema as t
from storage.sql.engine import SQLITE_LOWER, WRITE, dialect_insert, make_engine, not_indexed, translate_errors
from storage.sql.episodes import EpisodeRows
from storage.sql.jobs import JobRows
from storage.sql.migrations import alembic_config
from storage.sql.unit_of_work import SqlUnitOfWork

CHUNK = 500  # ids per IN (...) list; keeps well under SQLite's and PostgreSQL's parameter limits
_MIGRATE_LOCK = 0x6D656D737663  # pg_advisory_xact_lock key ("memsvc")

class SqlRecordStore(JobRows, EpisodeRows):
    """The source of truth: messages, cubes, versions, outbox, keys, jobs and event logs."""

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        self._owns_engine = owns_engine
        self._pg = engine.dialect.name == "postgresql"

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> SqlRecordStore:
        """A store on `sqlite:///path`, `sqlite://` or `postgresql+psycopg://...`; `close()` disposes it."""
        return cls(make_engine(url, pool_size=pool_size), owns_engine=True)

    @property
    def engine(self) -> Engine:
        """The engine, for components that share the database (the SQL graph store)."""
        return self._engine

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_errors("record"), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translate_errors("record"), self._writer.begin() as conn:
            yield conn

    def migrate(self) -> None:
        with self._write() as conn:
            if self._pg:  # concurrent starts: one migrates, the others wait and find it done
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATE_LOCK)))
            command.upgrade(alembic_config(connection=conn), "head")

    @contextmanager
    def unit_of_work(self) -> Iterator[SqlUnitOfWork]:
        uow = SqlUnitOfWork()
        try:
            yield uow
        finally:
            ops = uow.finish()  # staged writes are dropped when the block raises
        if ops:
            with self._write() as conn:
                for op in ops:
                    op(conn)
        uow.committed()

    # -- messages -------------------------------------------------------------------------

    def known_message_ids(self, tenant: str, user_id: str, ids: Sequence[str]) -> set[str]:
        m = t.messages
        found: set[str] = set()
        with self._read() as conn:
            for chunk in _chunks(ids):
                stmt = select(m.c.id).where(m.c.tenant == tenant, m.c.user_id == user_id, m.c.id.in_(chunk))
                found.update(conn.execute(stmt).scalars())
        return found

    def get_messages(self, tenant: str, user_id: str, ids: Sequence[str]) -> list[StoredMessage]:
        """Messages in the order of `ids` (each once); unknown ids are skipped."""
        m = t.messages
        by_id: dict[str, StoredMessage] = {}
        with self._read() as conn:
            for chunk in _chunks(ids):
                stmt = select(m).where(m.c.tenant == tenant, m.c.user_id == user_id, m.c.id.in_(chunk))
                by_id.update((r.id, StoredMessage.model_validate(r._mapping)) for r in conn.execute(stmt))
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    # -- memories -------------------------------------------------------------------------

    def get_memory(self, tenant: str, memory_id: str) -> MemoryCube | None:
        m = t.memories
        with self._read() as conn:
            row = conn.execute(select(m).where(m.c.tenant == tenant, m.c.id == memory_id)).first()
        return _cube(row) if row is not None else None

    def get_memories(self, tenant: str, ids: Sequence[str]) -> list[MemoryCube]:
        m = t.memories
        by_id: dict[str, MemoryCube] = {}
        with self._read() as conn:
            for chunk in _chunks(ids):
                stmt = select(m).where(not_indexed(m.c.tenant) == tenant, m.c.id.in_(chunk))
                rows = conn.execute(stmt)
                keys = list(rows.keys())  # once per result: `Row._asdict` asks for them every row
                by_id.update((r.id, _cube_of(keys, r)) for r in rows)
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def list_memories(self, tenant: str, query: MemoryQuery) -> Page[MemoryCube]:
        """Newest first by (created_at, id); `created_from <= created_at < created_to`.

        `types=[]` or `statuses=[]` match nothing (None means no filter).
        """
        if query.limit < 1:
            raise InvalidInput("limit must be at least 1")
        m = t.memories
        conds: list[ColumnElement[bool]] = [m.c.tenant == tenant]
        if query.user_id is not None:
            conds.append(m.c.user_id == query.user_id)
        if query.types is not None:
            conds.append(m.c.type.in_([v.value for v in query.types]))
        if query.statuses is not None:
            conds.append(m.c.status.in_([v.value for v in query.statuses]))
        if query.text:
            conds.append(self._contains_ci(m.c.content, query.text))
        if query.created_from is not None:
            conds.append(m.c.created_at >= query.created_from)
        if query.created_to is not None:
            conds.append(m.c.created_at < query.created_to)
        if query.cursor is not None:
            created, last_id = _decode_memory_cursor(query.cursor)
            conds += [m.c.created_at <= created,  # seeks the index (see iter_memories)
                      or_(m.c.created_at < created, and_(m.c.created_at == created, m.c.id < last_id))]
        stmt = select(m).where(*conds).order_by(m.c.created_at.desc(), m.c.id.desc()).limit(query.limit + 1)
        with self._read() as conn:
            cubes = [_cube(r) for r in conn.execute(stmt)]
        if len(cubes) <= query.limit:
            return Page(items=cubes)
        last = cubes[query.limit - 1]
        return Page(items=cubes[: query.limit], next_cursor=_encode_cursor([last.created_at.isoformat(), last.id]))

    def _oldest_first(self, columns: Sequence[Any], conds: Sequence[ColumnElement[bool]],
                      by: str = "created_at") -> Iterator[list[Row[Any]]]:
        """Pages of `CHUNK` memory rows (`columns` must include `by` and id), oldest first by (`by`, id),
        each read in its own short transaction; `by` is created_at or updated_at (both indexed per
        scope and per tenant)."""
        m = t.memories
        col = m.c[by]
        after: tuple[datetime, str] | None = None
        while True:
            page = list(conds)
            if after is not None:
                # `by >= …` beside the OR lets SQLite seek the index to the page's start; with the OR
                # alone it walked the scope from its first row on every page (quadratic: minutes at 1M)
                page += [col >= after[0], or_(col > after[0], and_(col == after[0], m.c.id > after[1]))]
            stmt = select(*columns).where(*page).order_by(col, m.c.id).limit(CHUNK)
            with self._read() as conn:
                rows = list(conn.execute(stmt))
            yield rows
            if len(rows) < CHUNK:
                return
            after = (getattr(rows[-1], by), rows[-1].id)

    def iter_memories(self, tenant: str, user_id: str | None = None) -> Iterator[MemoryCube]:
        """All cubes of the tenant (or scope), oldest first, fetched in batches (no open transaction)."""
        m = t.memories
        conds: list[ColumnElement[bool]] = [m.c.tenant == tenant]
        if user_id is not None:
            conds.append(m.c.user_id == user_id)
        for rows in self._oldest_first([m], conds):
            yield from (_cube(r) for r in rows)

    def changed_memories(self, tenant: str, user_id: str, since: datetime | None,
                         types: Sequence[MemoryType]) -> Iterator[MemoryCube]:
        m = t.memories
        conds: list[ColumnElement[bool]] = [m.c.tenant == tenant, m.c.user_id == user_id,
                                             m.c.status == MemoryStatus.ACTIVE.value,
                                             m.c.type.in_([x.value for x in types])]
        if since is not None:
            conds.append(m.c.updated_at > since)
        for rows in self._oldest_first([m], conds, by="updated_at"):
            yield from (_cube(r) for r in rows)

    def ranked_memories(self, tenant: str, user_id: str, written_by: Sequence[str], limit: int) -> list[MemoryCube]:
        m = t.memories
        stmt = select(m).where(
            m.c.tenant == tenant, m.c.user_id == user_id, m.c.written_by.in_(list(written_by)),
            m.c.status == MemoryStatus.ACTIVE.value,
        ).order_by(m.c.importance.desc(), func.coalesce(m.c.valid_from, m.c.created_at).desc(), m.c.id).limit(limit)
        with self._read() as conn:
            return [_cube(r) for r in conn.execute(stmt)]

    def changed_memory_states(self, tenant: str, since: datetime) -> Iterator[tuple[str, str, str]]:
        m = t.memories
        for rows in self._oldest_first([m.c.id, m.c.status, m.c.user_id, m.c.updated_at],
                                       [m.c.tenant == tenant, m.c.updated_at > since], by="updated_at"):
            yield from ((r.id, str(r.status), r.user_id) for r in rows)

    def job_mark(self, kind: str, tenant: str) -> datetime | None:
        jm = t.job_marks
        with self._read() as conn:
            return conn.execute(select(jm.c.mark).where(jm.c.kind == kind, jm.c.tenant == tenant)).scalar_one_or_none()

    def set_job_mark(self, kind: str, tenant: str, at: datetime) -> None:
        jm = t.job_marks
        stmt = dialect_insert(self._engine.dialect.name, jm).values(kind=kind, tenant=tenant, mark=at)
        with self._write() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[jm.c.kind, jm.c.tenant], set_={"mark": at}))

    def merge_mark(self, tenant: str, user_id: str) -> datetime | None:
        sc = t.scopes
        with self._read() as conn:
            return conn.execute(
                select(sc.c.merged_through).where(sc.c.tenant == tenant, sc.c.user_id == user_id)
            ).scalar_one_or_none()

    def memory_states(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        m = t.memories
        out: dict[str, tuple[str, str]] = {}
        with self._read() as conn:
            for chunk in _chunks(ids):
                stmt = select(m.c.id, m.c.status, m.c.user_id).where(not_indexed(m.c.tenant) == tenant, m.c.id.in_(chunk))
                out.update((r.id, (str(r.status), r.user_id)) for r in conn.execute(stmt))
        return out

    def iter_memory_states(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        m = t.memories
        for rows in self._oldest_first([m.c.id, m.c.status, m.c.user_id, m.c.created_at], [m.c.tenant == tenant]):
            yield from ((r.id, str(r.status), r.user_id) for r in rows)

    def history(self, tenant: str, memory_id: str) -> list[MemoryVersion]:
        v = t.memory_versions
        stmt = select(v).where(v.c.tenant == tenant, v.c.memory_id == memory_id).order_by(v.c.version)
        with self._read() as conn:
            return [
                MemoryVersion(
                    memory_id=r.memory_id, version=r.version, snapshot=r.snapshot,
                    change=ChangeKind(r.change), actor=r.actor, changed_at=r.changed_at,
                )
                for r in conn.execute(stmt)
            ]

    def record_access(self, tenant: str, ids: Sequence[str], at: datetime, *, times: int = 1) -> None:
        m = t.memories
        when = literal(at, m.c.last_accessed_at.type)  # typed: stored as the column stores times (UTC)
        newest = case((m.c.last_accessed_at > when, m.c.last_accessed_at), else_=when)
        with self._write() as conn:
            for chunk in _chunks(ids):
                conn.execute(
                    update(m)
                    .where(not_indexed(m.c.tenant) == tenant, m.c.id.in_(chunk))
                    .values(access_count=m.c.access_count + times, last_accessed_at=newest)
                )

    def purge_user(self, tenant: str, user_id: str) -> dict[str, int]:
        """Delete the scope's rows everywhere; counts per table.

        Also removes the scope's jobs (whose request `body.user_id` is the user, the shape
        `MemoryOS.submit` stores) and its outbox entries (payload `user_id`), except a pending
        `purge_scope` entry, which still has work to do. On SQLite the WAL is then checkpointed and
        truncated, and `secure_delete` (set per connection) has zeroed the freed pages, so the
        purged content is gone from the database files too.
        """
        m, v, o, j, s = t.memories, t.memory_versions, t.outbox, t.jobs, t.scopes
        scoped: list[Table] = [t.messages, t.events, t.entities, t.relations, t.mentions, t.episode_state, t.episodes,
                               t.name_vectors]
        counts: dict[str, int] = {}
        with self._write() as conn:
            # First, so that the scope row's lock orders this purge against concurrent writes: a
            # write that commits first is purged too, one that comes after plans again (no row).
            conn.execute(delete(s).where(s.c.tenant == tenant, s.c.user_id == user_id))
            own_ids = select(m.c.id).where(m.c.tenant == tenant, m.c.user_id == user_id)
            counts["memory_versions"] = conn.execute(
                delete(v).where(not_indexed(v.c.tenant) == tenant, v.c.memory_id.in_(own_ids))
            ).rowcount
            counts["memories"] = conn.execute(
                delete(m).where(m.c.tenant == tenant, m.c.user_id == user_id)
            ).rowcount
            for table in scoped:
                counts[table.name] = conn.execute(
                    delete(table).where(table.c.tenant == tenant, table.c.user_id == user_id)
                ).rowcount
            counts["jobs"] = conn.execute(
                delete(j).where(j.c.tenant == tenant, or_(
                    j.c.request[("body", "user_id")].as_string() == user_id,  # `wait: false` writes
                    j.c.request["user_id"].as_string() == user_id,  # background jobs about one user
                ))
            ).rowcount
            keep = and_(o.c.done_at.is_(None), o.c.op == OutboxOp.PURGE_SCOPE.value)
            counts["outbox"] = conn.execute(
                delete(o).where(
                    o.c.tenant == tenant, o.c.payload["user_id"].as_string() == user_id, ~keep
                )
            ).rowcount
        if not self._pg:
            self._checkpoint()
        return counts

    def scrub(self) -> None:
        """Leave no deleted row in the database files: on SQLite, `secure_delete` has zeroed the freed
        pages, and the WAL (which still holds the old pages) is checkpointed and truncated. Nothing to
        do on PostgreSQL (its files are the server's)."""
        if not self._pg:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (outside any transaction)."""
        raw = self._engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        finally:
            raw.close()

    # -- scopes ---------------------------------------------------------------------------

    def scope_version(self, tenant: str, user_id: str) -> int | None:
        """The scope's record version (None before its first write and after a purge)."""
        sc = t.scopes
        with self._read() as conn:
            return conn.execute(
                select(sc.c.version).where(sc.c.tenant == tenant, sc.c.user_id == user_id)
            ).scalar_one_or_none()

    def slot_holders(self, tenant: str, user_id: str, slot: str, types: Sequence[MemoryType]) -> list[MemoryCube]:
        """Active cubes of `types` in the scope that set the single-valued `slot`, oldest first."""
        m = t.memories
        stmt = select(m).where(
            m.c.tenant == tenant, m.c.user_id == user_id, m.c.status == MemoryStatus.ACTIVE.value,
            m.c.type.in_([x.value for x in types]), m.c["metadata"][SLOT_KEY].as_string() == slot,
        ).order_by(m.c.created_at, m.c.id)
        with self._read() as conn:
            return [_cube(r) for r in conn.execute(stmt)]

    def unindexed_memory_ids(self, tenant: str, user_id: str) -> set[str]:
        """Memories of the scope whose vector-index state is not confirmed yet (an entry that
        changes their point is not done: pending, retrying or dead)."""
        o = t.outbox
        ops = [OutboxOp.UPSERT_VECTORS.value, OutboxOp.SET_STATUS.value, OutboxOp.DELETE_VECTORS.value]
        stmt = select(o.c.payload).where(
            o.c.done_at.is_(None), o.c.tenant == tenant, o.c.op.in_(ops),
            o.c.payload["user_id"].as_string() == user_id,
        )
        with self._read() as conn:
            return {str(i) for payload in conn.execute(stmt).scalars() for i in payload.get("ids", [])}

    # -- outbox ---------------------------------------------------------------------------

    def pending_outbox(self, limit: int = 100, *, after: int | None = None) -> list[OutboxEntry]:
        """Entries not done and not dead, oldest first (ids above `after`), across all tenants."""
        o = t.outbox
        stmt = select(o).where(o.c.done_at.is_(None), o.c.dead_at.is_(None)).order_by(o.c.id).limit(limit)
        if after is not None:
            stmt = stmt.where(o.c.id > after)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def due_outbox(
        self, now: datetime, fresh_before: datetime, limit: int = 100, *, ops_now: Sequence[OutboxOp] = (),
    ) -> list[OutboxEntry]:
        """Entries for the drain, oldest first: not done, not dead, and due (`next_at <= now`; or
        never scheduled and either created before `fresh_before`, i.e. left by the request that
        wrote them, or of an op in `ops_now`, which requests leave to the drain)."""
        o = t.outbox
        unscheduled = or_(o.c.created_at <= fresh_before, o.c.op.in_([x.value for x in ops_now]))
        due = or_(o.c.next_at <= now, and_(o.c.next_at.is_(None), unscheduled))
        stmt = select(o).where(o.c.done_at.is_(None), o.c.dead_at.is_(None), due).order_by(o.c.id).limit(limit)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def complete_outbox(self, ids: Sequence[int]) -> None:
        """Mark entries done (`done_at`); the rows stay as an audit trail until pruned or the scope is
        purged. A done `purge_scope` entry is deleted: it names the purged user."""
        o = t.outbox
        now = utcnow()
        with self._write() as conn:
            for chunk in _chunks(ids):
                conn.execute(delete(o).where(o.c.id.in_(chunk), o.c.op == OutboxOp.PURGE_SCOPE.value))
                conn.execute(update(o).where(o.c.id.in_(chunk), o.c.done_at.is_(None)).values(done_at=now))

    def fail_outbox(self, entry_id: int, error: str, *, retry_at: datetime | None = None) -> None:
        """Count a failed attempt; the entry is retried from `retry_at`, or dead when that is None."""
        o = t.outbox
        values: dict[str, Any] = {"attempts": o.c.attempts + 1, "last_error": error[:2000]}
        if retry_at is None:
            values["dead_at"] = utcnow()
        else:
            values["next_at"] = retry_at
        with self._write() as conn:
            conn.execute(update(o).where(o.c.id == entry_id, o.c.done_at.is_(None)).values(**values))

    def dead_outbox(self, limit: int = 100, *, tenant: str | None = None) -> list[OutboxEntry]:
        """Dead letters, newest first: all of them, or one tenant's."""
        o = t.outbox
        stmt = select(o).where(o.c.done_at.is_(None), o.c.dead_at.is_not(None)).order_by(o.c.id.desc()).limit(limit)
        if tenant is not None:
            stmt = stmt.where(o.c.tenant == tenant)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def revive_outbox(self, ids: Sequence[int] | None = None, *, tenant: str | None = None) -> int:
        """Give dead entries (these, or all; of one tenant, or any) a fresh set of attempts, due now;
        how many."""
        o = t.outbox
        stmt = update(o).where(o.c.done_at.is_(None), o.c.dead_at.is_not(None))
        if ids is not None:
            stmt = stmt.where(o.c.id.in_(list(ids)))
        if tenant is not None:
            stmt = stmt.where(o.c.tenant == tenant)
        with self._write() as conn:
            return int(conn.execute(stmt.values(dead_at=None, attempts=0, next_at=utcnow())).rowcount)

    def outbox_stats(self, now: datetime) -> dict[str, Any]:
        """Counts of entries not done: `pending` (never failed), `retrying`, `dead`; and the
        creation time of the oldest one that is not dead."""
        o = t.outbox
        live = and_(o.c.done_at.is_(None), o.c.dead_at.is_(None))
        stmt = select(
            func.count().filter(live, o.c.attempts == 0).label("pending"),
            func.count().filter(live, o.c.attempts > 0).label("retrying"),
            func.count().filter(o.c.done_at.is_(None), o.c.dead_at.is_not(None)).label("dead"),
            func.min(o.c.created_at).filter(live).label("oldest"),
        ).where(o.c.done_at.is_(None))
        with self._read() as conn:
            row = conn.execute(stmt).one()
        oldest = _parse_time(row.oldest)
        return {"pending": int(row.pending), "retrying": int(row.retrying), "dead": int(row.dead),
                "oldest_age_s": max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0}

    def prune_outbox(self, done_before: datetime) -> int:
        """Delete done entries finished before the time; how many."""
        o = t.outbox
        with self._write() as conn:
            return int(conn.execute(delete(o).where(o.c.done_at.is_not(None), o.c.done_at < done_before)).rowcount)

    # -- keys, jobs, events ---------------------------------------------------------------

    def add_key(self, key: ApiKey) -> None:
        """Insert a key; a duplicate id or hash raises `Conflict`."""
        with self._write() as conn:
            conn.execute(insert(t.api_keys).values(**key.model_dump()))

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        k = t.api_keys
        with self._read() as conn:
            row = conn.execute(select(k).where(k.c.key_hash == key_hash)).first()
        return ApiKey.model_validate(row._mapping) if row is not None else None

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        k = t.api_keys
        stmt = select(k).order_by(k.c.created_at, k.c.id)
        if tenant is not None:
            stmt = stmt.where(k.c.tenant == tenant)
        with self._read() as conn:
            return [ApiKey.model_validate(r._mapping) for r in conn.execute(stmt)]

    def update_key(self, key: ApiKey) -> None:
        k = t.api_keys
        with self._write() as conn:
            done = conn.execute(
                update(k).where(k.c.id == key.id).values(revoked=key.revoked, expires_at=key.expires_at)
            ).rowcount
        if done != 1:
            raise NotFound(f"API key {key.id} not found")

    def revoke_session(self, sid_hash: str, expires_at: datetime) -> None:
        s = t.admin_revoked_sessions
        stmt = dialect_insert(self._engine.dialect.name, s).values(sid_hash=sid_hash, expires_at=expires_at)
        with self._write() as conn:
            conn.execute(delete(s).where(s.c.expires_at <= utcnow()))
            conn.execute(stmt.on_conflict_do_nothing(index_elements=[s.c.sid_hash]))

    def session_revoked(self, sid_hash: str) -> bool:
        s = t.admin_revoked_sessions
        with self._read() as conn:
            return conn.execute(select(s.c.sid_hash).where(s.c.sid_hash == sid_hash)).first() is not None

    def events(
        self, tenant: str, *, user_id: str | None = None, kinds: Sequence[str] | None = None,
        limit: int = 100, cursor: str | None = None,
    ) -> Page[EventLog]:
        """Newest first (by id); `kinds=[]` matches nothing."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        e = t.events
        conds: list[ColumnElement[bool]] = [e.c.tenant == tenant]
        if user_id is not None:
            conds.append(e.c.user_id == user_id)
        if kinds is not None:
            conds.append(e.c.kind.in_(list(kinds)))
        if cursor is not None:
            conds.append(e.c.id < _decode_event_cursor(cursor))
        stmt = select(e).where(*conds).order_by(e.c.id.desc()).limit(limit + 1)
        with self._read() as conn:
            items = [EventLog.model_validate(r._mapping) for r in conn.execute(stmt)]
        if len(items) <= limit:
            return Page(items=items)
        return Page(items=items[:limit], next_cursor=_encode_cursor([items[limit - 1].id]))

    # -- admin ----------------------------------------------------------------------------

    def scope_stats(self, tenant: str | None = None) -> list[ScopeStats]:
        """One row per (tenant, user_id) with memories, sorted.

        `counts` has every memory type (active cubes only); `total` and `bytes` (UTF-8 bytes of
        content) cover all non-deleted cubes; `last_write` is the newest `updated_at`.
        """
        m = t.memories
        size = func.octet_length(m.c.content) if self._pg else func.length(cast(m.c.content, LargeBinary))
        stmt = select(
            m.c.tenant, m.c.user_id, m.c.type, m.c.status,
            func.count().label("n"), func.sum(size).label("size"), func.max(m.c.updated_at).label("last"),
        ).group_by(m.c.tenant, m.c.user_id, m.c.type, m.c.status)
        if tenant is not None:
            stmt = stmt.where(m.c.tenant == tenant)
        stats: dict[tuple[str, str], ScopeStats] = {}
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        for r in rows:
            s = stats.setdefault(
                (r.tenant, r.user_id),
                ScopeStats(tenant=r.tenant, user_id=r.user_id, counts={v.value: 0 for v in MemoryType},
                           total=0, bytes=0),
            )
            if r.status == MemoryStatus.ACTIVE.value:
                s.counts[r.type] = s.counts.get(r.type, 0) + r.n
            if r.status == MemoryStatus.ARCHIVED.value:
                s.archived += r.n
            if r.status != MemoryStatus.DELETED.value:
                s.total += r.n
                s.bytes += int(r.size or 0)
            if r.last is not None and (s.last_write is None or r.last > s.last_write):
                s.last_write = r.last
        return [stats[key] for key in sorted(stats)]

    def count_status(self, tenant: str, status: MemoryStatus, user_id: str | None = None) -> int:
        m = t.memories
        conds = [m.c.tenant == tenant, m.c.status == status.value]
        if user_id is not None:
            conds.append(m.c.user_id == user_id)
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(m).where(*conds)).scalar_one())

    def tenants(self) -> list[str]:
        """Tenants that have memories or API keys, sorted."""
        stmt = union(select(t.memories.c.tenant), select(t.api_keys.c.tenant))
        with self._read() as conn:
            return sorted(conn.execute(stmt).scalars())

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    # -- dialect helpers ------------------------------------------------------------------

    def _contains_ci(self, column: ColumnElement[str], text: str) -> ColumnElement[bool]:
        """Case-insensitive substring match, `%`, `_` and `/` taken literally."""
        if self._pg:
            return column.icontains(text, autoescape=True)
        # SQLite's LIKE and lower() fold ASCII only; fold with Python's str.lower instead.
        folded: ColumnElement[str] = getattr(func, SQLITE_LOWER)(column)
        return folded.contains(text.lower(), autoescape=True)



# -- rows, cursors and errors ---------------------------------------------------------------


def _cube(row: Row[Any]) -> MemoryCube:
    # a plain dict: pydantic validates one about twice as fast as a RowMapping (the read path loads
    # every candidate of a rerank pool, 200 rows a search)
    return MemoryCube.model_validate(row._asdict())


def _cube_of(keys: Sequence[str], row: Row[Any]) -> MemoryCube:
    """`_cube` for the rows of one result, its column names read once."""
    return MemoryCube.model_validate(dict(zip(keys, row, strict=True)))


def _entry(r: Row[Any]) -> OutboxEntry:
    return OutboxEntry(
        id=r.id, tenant=r.tenant, op=OutboxOp(r.op), payload=r.payload, created_at=r.created_at,
        attempts=r.attempts, next_at=r.next_at, dead_at=r.dead_at, last_error=r.last_error,
    )


def _parse_time(value: Any) -> datetime | None:
    """An aggregate's datetime, which SQLite hands back as text."""
    if value is None:
        return None
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def _encode_cursor(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("invalid cursor", details={"cursor": cursor}) from exc


def _decode_memory_cursor(cursor: str) -> tuple[datetime, str]:
    value = _decode_cursor(cursor)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        try:
            created = datetime.fromisoformat(value[0])
        except ValueError:
            pass
        else:
            if created.tzinfo is not None:
                return created, value[1]
    raise InvalidInput("invalid cursor", details={"cursor": cursor})


def _decode_event_cursor(cursor: str) -> int:
    value = _decode_cursor(cursor)
    if isinstance(value, list) and len(value) == 1 and type(value[0]) is int:
        return value[0]
    raise InvalidInput("invalid cursor", details={"cursor": cursor})


def _chunks(ids: Sequence[Any]) -> Iterable[list[Any]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), CHUNK):
        yield unique[start : start + CHUNK]
