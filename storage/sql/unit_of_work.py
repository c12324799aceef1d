"""`SqlUnitOfWork`: writes staged by the engine and flushed in one transaction by the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Insert, Table, and_, insert, select, update
from sqlalchemy.engine import Connection

from memsvc.errors import Conflict, NotFound, ScopeChanged
from memsvc.models import (
    EPISODE_KEY,
    TURN_KEY,
    ChangeKind,
    Episode,
    EpisodeState,
    EventLog,
    MemoryCube,
    MemoryVersion,
    OutboxEntry,
    StoredMessage,
    utcnow,
)
from storage.sql import episodes as ep
from storage.sql import schema as t
from storage.sql.engine import dialect_insert

Op = Callable[[Connection], None]


class SqlUnitOfWork:
    """Writes staged for one transaction; values are captured when staged."""

    def __init__(self) -> None:
        self._ops: list[Op] | None = []
        self._on_commit: list[Callable[[], None]] = []

    def finish(self) -> list[Op]:
        """The staged operations, in order; nothing can be staged afterwards."""
        ops, self._ops = self._ops or [], None
        return ops

    def committed(self) -> None:
        for callback in self._on_commit:
            callback()

    def _stage(self, op: Op) -> None:
        if self._ops is None:
            raise RuntimeError("unit of work already finished")
        self._ops.append(op)

    def guard_scope(self, tenant: str, user_id: str, expected: int | None) -> None:
        """Commit only while the scope is still at `expected` (None: has no row); bumps it.

        Staged first by a write, so that on PostgreSQL the scope row's lock is taken before any
        other row is touched; a mismatch raises `ScopeChanged` and nothing commits."""
        self._stage(partial(_guard_scope, tenant, user_id, expected))

    def set_merge_mark(self, tenant: str, user_id: str, at: datetime | None, *, expected: int | None) -> None:
        self._stage(partial(_set_merge_mark, tenant, user_id, at, expected))

    def touch_scope(self, tenant: str, user_id: str) -> None:
        """Bump the scope's version (creating its row), whatever it was."""
        self._stage(partial(_touch_scope, tenant, user_id))

    def add_messages(self, messages: Sequence[StoredMessage]) -> None:
        """Insert messages; ids already stored for the scope are ignored (idempotent)."""
        rows = [_message_row(msg) for msg in messages]
        if rows:
            self._stage(partial(_insert_ignore, t.messages, rows))

    def insert_memories(self, cubes: Sequence[MemoryCube], *, actor: str | None = None) -> None:
        if not cubes:
            return
        now = utcnow()
        rows = [_cube_row(c) for c in cubes]
        versions = [_version_row(c, ChangeKind.CREATE, actor, now) for c in cubes]
        self._stage(partial(_execute, insert(t.memories), rows))
        self._stage(partial(_execute, insert(t.memory_versions), versions))

    def import_memories(self, cubes: Sequence[MemoryCube], versions: Sequence[MemoryVersion]) -> None:
        """Insert cubes with their recorded history exactly as exported (no new snapshot)."""
        if not cubes:
            return
        tenants = {c.id: c.tenant for c in cubes}
        rows = [_cube_row(c) for c in cubes]
        history = [
            {"memory_id": v.memory_id, "version": v.version, "tenant": tenants[v.memory_id], "snapshot": v.snapshot,
             "change": v.change.value, "actor": v.actor, "changed_at": v.changed_at}
            for v in versions if v.memory_id in tenants
        ]
        self._stage(partial(_execute, insert(t.memories), rows))
        if history:
            self._stage(partial(_execute, insert(t.memory_versions), history))

    def save_memory(self, cube: MemoryCube, change: ChangeKind, *, actor: str | None = None) -> None:
        """Overwrite the row; `NotFound` if absent, `Conflict` unless `cube.version` is newer."""
        self._stage(partial(_save_memory, _cube_row(cube), _version_row(cube, change, actor, utcnow())))

    def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        """Stage outbox entries; each entry's `id` is set once the transaction commits."""
        rows = [
            {
                "tenant": e.tenant, "op": e.op.value, "payload": e.model_dump(mode="json")["payload"],
                "created_at": e.created_at, "attempts": e.attempts, "next_at": e.next_at,
            }
            for e in entries
        ]
        if rows:
            self._stage(partial(self._insert_outbox, rows, list(entries)))

    def _insert_outbox(self, rows: list[dict[str, Any]], entries: list[OutboxEntry], conn: Connection) -> None:
        stmt = insert(t.outbox).returning(t.outbox.c.id, sort_by_parameter_order=True)
        ids = conn.execute(stmt, rows).scalars().all()
        self._on_commit.append(partial(_assign_ids, entries, list(ids)))

    def save_episodes(self, state: EpisodeState, episodes: Sequence[Episode]) -> None:
        self._stage(partial(ep.save_episodes, ep.state_row(state), [ep.episode_row(e) for e in episodes]))

    def mark_digested(self, tenant: str, user_id: str, episode: int, turns: int, digest_id: str | None,
                      *, expected: int) -> None:
        self._stage(partial(ep.mark_digested, tenant, user_id, episode, turns, digest_id, expected))

    def log(self, events: Sequence[EventLog]) -> None:
        rows = [
            {
                "tenant": e.tenant, "user_id": e.user_id, "kind": e.kind,
                "payload": e.model_dump(mode="json")["payload"], "actor": e.actor, "created_at": e.created_at,
            }
            for e in events
        ]
        if rows:
            self._stage(partial(_execute, insert(t.events), rows))


# -- staged operations ----------------------------------------------------------------------


def _execute(stmt: Insert, rows: list[dict[str, Any]], conn: Connection) -> None:
    conn.execute(stmt, rows)


def _insert_ignore(table: Table, rows: list[dict[str, Any]], conn: Connection) -> None:
    conn.execute(dialect_insert(conn.dialect.name, table).on_conflict_do_nothing(), rows)


def fresh_version() -> int:
    """A new scope row's first version: the clock in microseconds, so that a row deleted by a
    purge and created again never repeats a version an earlier row had (a cache keyed by it
    cannot mistake the new scope for the old)."""
    return time.time_ns() // 1000


def _guard_scope(tenant: str, user_id: str, expected: int | None, conn: Connection) -> None:
    s = t.scopes
    if expected is None:
        v = fresh_version()
        stmt = dialect_insert(conn.dialect.name, s).values(
            tenant=tenant, user_id=user_id, version=v, graph_version=v,
        ).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
    else:
        stmt = update(s).where(s.c.tenant == tenant, s.c.user_id == user_id, s.c.version == expected) \
            .values(version=s.c.version + 1)
    if conn.execute(stmt).rowcount != 1:
        raise ScopeChanged(f"user {user_id} changed while this write was planned")


def _set_merge_mark(tenant: str, user_id: str, at: datetime | None, expected: int | None, conn: Connection) -> None:
    s = t.scopes
    mine = [s.c.tenant == tenant, s.c.user_id == user_id]
    if expected is not None:
        mine.append(s.c.version == expected)
    conn.execute(update(s).where(*mine).values(merged_through=at))


def _touch_scope(tenant: str, user_id: str, conn: Connection) -> None:
    s = t.scopes
    v = fresh_version()
    stmt = dialect_insert(conn.dialect.name, s).values(tenant=tenant, user_id=user_id, version=v, graph_version=v)
    conn.execute(stmt.on_conflict_do_update(index_elements=[s.c.tenant, s.c.user_id],
                                            set_={"version": s.c.version + 1}))


def _assign_ids(entries: list[OutboxEntry], ids: list[int]) -> None:
    for entry, entry_id in zip(entries, ids, strict=True):
        entry.id = entry_id


def _save_memory(row: dict[str, Any], version: dict[str, Any], conn: Connection) -> None:
    m = t.memories
    mine = and_(m.c.id == row["id"], m.c.tenant == row["tenant"])
    values = {k: v for k, v in row.items() if k not in ("id", "tenant")}
    if conn.execute(update(m).where(mine, m.c.version < row["version"]).values(**values)).rowcount != 1:
        current = conn.execute(select(m.c.version).where(mine)).scalar()
        if current is None:
            raise NotFound(f"memory {row['id']} not found")
        raise Conflict(f"memory {row['id']} is at version {current}, not older than {row['version']}")
    conn.execute(insert(t.memory_versions).values(**version))


# -- rows -----------------------------------------------------------------------------------


def _cube_row(cube: MemoryCube) -> dict[str, Any]:
    row = cube.model_dump()
    json_safe = cube.model_dump(mode="json", include={"type", "status", "metadata", "source_ids"})
    row.update(json_safe)
    row["episode"], row["turn"] = _position(cube.metadata.get(EPISODE_KEY)), _position(cube.metadata.get(TURN_KEY))
    return row


def _position(value: Any) -> int | None:
    """The indexed copy of a reserved position key (`_episode`, `_turn`): an integer or nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _version_row(cube: MemoryCube, change: ChangeKind, actor: str | None, at: datetime) -> dict[str, Any]:
    return {
        "memory_id": cube.id, "version": cube.version, "tenant": cube.tenant,
        "snapshot": cube.model_dump(mode="json"), "change": change.value, "actor": actor, "changed_at": at,
    }


def _message_row(msg: StoredMessage) -> dict[str, Any]:
    row = msg.model_dump()
    row["role"] = msg.role.value
    return row
