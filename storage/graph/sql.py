"""`SqlGraphStore`: the `GraphStore` port on the record database (the default backend).

Rows live in the `entities`, `relations` and `mentions` tables of `storage.sql.schema`.
Algorithms read a scope through an in-process cache: node index maps plus edge and mention
dicts, loaded from SQL once per scope and then updated in place by every `upsert` (no reload
per write); the CSR matrices are rebuilt from the cache only when a snapshot is asked for
after a change. Deletes drop the cached scopes they touch.

Several processes (API nodes) share the database: every change of a scope's graph rows bumps
the scope's `graph_version` (table `scopes`) in the same transaction, and every read compares
the cached version with it (one primary-key lookup), reloading the scope when another process
changed it. A purge deletes the scope row, which also invalidates every node's cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from memsvc.errors import Conflict
from memsvc.graph.ids import normalize_name
from memsvc.graph.matrix import build_adjacency, build_mentions
from memsvc.models import Entity, Mention, Relation, utcnow
from memsvc.ports import GraphCatalog, GraphSnapshot, Page
from storage.graph.common import (
    alias_keys,
    check_limit,
    check_scope,
    chunks,
    decode_cursor,
    dedupe_entities,
    dedupe_mentions,
    dedupe_relations,
    encode_cursor,
    merge_aliases,
    missing_entities,
    order_found,
    referenced_ids,
)
from storage.sql import schema
from storage.sql.engine import WRITE, dialect_insert, not_indexed, translate_errors
from storage.sql.unit_of_work import fresh_version

E, R, M, S = schema.entities, schema.relations, schema.mentions, schema.scopes
Scope = tuple[str, str]


@dataclass
class _ScopeCache:
    """One scope's graph as index maps and edge dicts (cheap to append to)."""

    entity_ids: list[str] = field(default_factory=list)
    entity_index: dict[str, int] = field(default_factory=dict)
    memory_ids: list[str] = field(default_factory=list)
    memory_index: dict[str, int] = field(default_factory=dict)
    names: dict[str, set[int]] = field(default_factory=dict)  # normalised name/alias -> entities
    display: list[str] = field(default_factory=list)  # entity display names, by index
    mentions: dict[tuple[int, int], float] = field(default_factory=dict)
    relations: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    facts: dict[str, Relation] = field(default_factory=dict)
    snapshot: GraphSnapshot | None = None
    version: int | None = None  # the scope's graph_version this cache reflects

    def add_entity(self, entity_id: str, keys: set[str], name: str = "") -> None:
        idx = self.entity_index.get(entity_id)
        if idx is None:
            idx = self.entity_index[entity_id] = len(self.entity_ids)
            self.entity_ids.append(entity_id)
            self.display.append(name)
        for key in keys:
            self.names.setdefault(key, set()).add(idx)
        self.snapshot = None

    def add_mention(self, memory_id: str, entity_id: str, weight: float) -> None:
        e = self.entity_index.get(entity_id)
        if e is None:
            return
        m = self.memory_index.get(memory_id)
        if m is None:
            m = self.memory_index[memory_id] = len(self.memory_ids)
            self.memory_ids.append(memory_id)
        self.mentions[(m, e)] = weight
        self.snapshot = None

    def add_relation(self, relation: Relation) -> None:
        s, o = self.entity_index.get(relation.subject_id), self.entity_index.get(relation.object_id)
        if s is None or o is None:
            return
        known = self.facts.get(relation.id)
        if known is None:
            self.relations[relation.id] = (s, o, relation.weight)
            self.facts[relation.id] = relation
            self.snapshot = None
        elif known.valid_to is None and relation.valid_to is not None:
            self.facts[relation.id] = known.model_copy(update={"valid_to": relation.valid_to})
            self.snapshot = None

    def build(self) -> GraphSnapshot:
        if self.snapshot is None:
            n_e, n_m = len(self.entity_ids), len(self.memory_ids)
            keys = np.array(list(self.mentions.keys()), dtype=np.int64).reshape(-1, 2)
            mentions = build_mentions(n_m, n_e, keys[:, 0], keys[:, 1], list(self.mentions.values()))
            rel = np.array(list(self.relations.values()), dtype=np.float64).reshape(-1, 3)
            adjacency = build_adjacency(n_e, rel[:, 0].astype(np.int64), rel[:, 1].astype(np.int64), rel[:, 2], mentions)
            self.snapshot = GraphSnapshot(
                list(self.entity_ids), list(self.memory_ids), adjacency, mentions,
                entity_names=list(self.display), relations=list(self.facts.values()),
            )
        return self.snapshot


class SqlGraphStore:
    """Entities, relations and mentions in SQL, with per-scope CSR snapshots cached in process."""

    def __init__(self, engine: Engine, *, max_cached_scopes: int = 256) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        self._max_cached = max_cached_scopes
        self._cache: OrderedDict[Scope, _ScopeCache] = OrderedDict()
        self._scope_locks: dict[Scope, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0  # full scope loads from SQL (observability and tests)

    # -- transactions and cache plumbing --------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_errors("graph"), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translate_errors("graph"), self._writer.begin() as conn:
            yield conn

    def _scope_lock(self, scope: Scope) -> threading.Lock:
        with self._lock:
            return self._scope_locks.setdefault(scope, threading.Lock())

    def _cached(self, scope: Scope) -> _ScopeCache | None:
        with self._lock:
            cache = self._cache.get(scope)
            if cache is not None:
                self._cache.move_to_end(scope)
            return cache

    def _scope(self, tenant: str, user_id: str) -> _ScopeCache:
        """The scope's cache, loaded from SQL on first use and again whenever another process
        changed the scope since (call with the scope lock held)."""
        scope = (tenant, user_id)
        cache = self._cached(scope)
        if cache is not None:
            with self._read() as conn:
                if _graph_version(conn, tenant, user_id) != cache.version:
                    cache = None
        if cache is None:
            cache = self._load(tenant, user_id)
            with self._lock:
                self._cache[scope] = cache
                while len(self._cache) > self._max_cached:
                    self._cache.popitem(last=False)
        return cache

    def _invalidate(self, scopes: Sequence[Scope]) -> None:
        for scope in scopes:
            with self._scope_lock(scope):
                self._drop(scope)

    def _drop(self, scope: Scope) -> None:
        with self._lock:
            self._cache.pop(scope, None)

    def _load(self, tenant: str, user_id: str) -> _ScopeCache:
        self.loads += 1
        cache = _ScopeCache()
        with self._read() as conn:
            # The version first: a change committed while the rows are read leaves the cache at an
            # older version than its rows, so the next read loads again (never the reverse).
            cache.version = _graph_version(conn, tenant, user_id)
            for row in conn.execute(
                select(E.c.id, E.c.name, E.c.aliases)
                .where(E.c.tenant == tenant, E.c.user_id == user_id)
                .order_by(E.c.created_at, E.c.id)
            ):
                cache.add_entity(row.id, alias_keys(row.name, row.aliases or []), row.name)
            for mrow in conn.execute(
                select(M.c.memory_id, M.c.entity_id, M.c.weight)
                .where(M.c.tenant == tenant, M.c.user_id == user_id)
                .order_by(M.c.memory_id, M.c.entity_id)
            ):
                cache.add_mention(mrow.memory_id, mrow.entity_id, mrow.weight)
            for rrow in conn.execute(
                select(R).where(R.c.tenant == tenant, R.c.user_id == user_id).order_by(R.c.id)
            ):
                cache.add_relation(_relation(rrow))
        return cache

    # -- writes ---------------------------------------------------------------------------

    def upsert(
        self, tenant: str, user_id: str, entities: Sequence[Entity],
        relations: Sequence[Relation], mentions: Sequence[Mention],
    ) -> None:
        """Merge entities by id (aliases merged, first name kept), add relations and mentions.

        Idempotent: relations are keyed by id, mentions by (memory, entity). An entity's
        `mention_count` is kept by the store as the number of memories that mention it.
        """
        check_scope(tenant, user_id, entities, relations, mentions)
        ents, rels, ments = dedupe_entities(entities), dedupe_relations(relations), dedupe_mentions(mentions)
        if not (ents or rels or ments):
            return
        now = utcnow()
        scope = (tenant, user_id)
        with self._scope_lock(scope):
            with self._write() as conn:
                stored, names = self._write_entities(conn, tenant, user_id, ents, now)
                outside = referenced_ids(rels, ments) - set(stored)
                if outside:
                    found = self._existing_ids(conn, tenant, user_id, outside)
                    if outside - found:
                        raise missing_entities(tenant, user_id, outside - found)
                self._write_mentions(conn, tenant, user_id, ments)
                self._write_relations(conn, rels, now)
                version = _bump_graph_version(conn, tenant, user_id)
            cache = self._cached(scope)
            if cache is not None and (cache.version is None or version != cache.version + 1):
                self._drop(scope)  # another process wrote in between: reload on the next read
            elif cache is not None:
                cache.version = version
                for entity_id, keys in stored.items():
                    cache.add_entity(entity_id, keys, names[entity_id])
                for m in ments:
                    cache.add_mention(m.memory_id, m.entity_id, m.weight)
                for r in rels:
                    cache.add_relation(r)

    def _existing_ids(self, conn: Connection, tenant: str, user_id: str, ids: set[str]) -> set[str]:
        found: set[str] = set()
        for part in chunks(sorted(ids)):
            stmt = select(E.c.id).where(not_indexed(E.c.tenant) == tenant, E.c.user_id == user_id, E.c.id.in_(part))
            found.update(conn.execute(stmt).scalars())
        return found

    def _write_entities(
        self, conn: Connection, tenant: str, user_id: str, ents: Sequence[Entity], now: Any
    ) -> tuple[dict[str, set[str]], dict[str, str]]:
        """Insert new entities and merge known ones; returns each id's name keys and stored name."""
        existing: dict[str, Any] = {}
        for part in chunks([e.id for e in ents]):
            rows = conn.execute(select(E.c.id, E.c.tenant, E.c.user_id, E.c.name, E.c.label, E.c.aliases)
                                .where(E.c.id.in_(part)))
            existing.update((row.id, row) for row in rows)
        inserts, updates, keys, names = [], [], {}, {}
        for e in ents:
            row = existing.get(e.id)
            if row is None:
                inserts.append({
                    "id": e.id, "tenant": tenant, "user_id": user_id, "name": e.name,
                    "norm_name": normalize_name(e.name), "label": e.label, "aliases": e.aliases,
                    "mention_count": 0, "created_at": now,
                })
                keys[e.id] = alias_keys(e.name, e.aliases)
                names[e.id] = e.name
                continue
            if (row.tenant, row.user_id) != (tenant, user_id):
                raise Conflict("entity id already used by another scope", details={"entity_id": e.id})
            aliases = merge_aliases(row.name, row.aliases or [], [e.name, *e.aliases])
            label = row.label or e.label
            if aliases != (row.aliases or []) or label != row.label:
                updates.append({"b_id": e.id, "b_aliases": aliases, "b_label": label})
            keys[e.id] = alias_keys(row.name, aliases)
            names[e.id] = row.name
        if inserts:
            conn.execute(insert(E), inserts)
        if updates:
            conn.execute(
                update(E).where(E.c.id == bindparam("b_id"))
                .values(aliases=bindparam("b_aliases"), label=bindparam("b_label")),
                updates,
            )
        return keys, names

    def _write_mentions(self, conn: Connection, tenant: str, user_id: str, ments: Sequence[Mention]) -> None:
        if not ments:
            return
        existing: dict[tuple[str, str], float] = {}
        for part in chunks(sorted({m.memory_id for m in ments})):
            rows = conn.execute(select(M.c.memory_id, M.c.entity_id, M.c.weight).where(M.c.memory_id.in_(part)))
            existing.update(((row.memory_id, row.entity_id), row.weight) for row in rows)
        new = [m for m in ments if (m.memory_id, m.entity_id) not in existing]
        changed = [m for m in ments if existing.get((m.memory_id, m.entity_id), m.weight) != m.weight]
        if new:
            conn.execute(insert(M), [
                {"tenant": tenant, "user_id": user_id, "memory_id": m.memory_id, "entity_id": m.entity_id,
                 "weight": m.weight}
                for m in new
            ])
        if changed:
            conn.execute(
                update(M).where(M.c.memory_id == bindparam("b_mem"), M.c.entity_id == bindparam("b_ent"))
                .values(weight=bindparam("b_w")),
                [{"b_mem": m.memory_id, "b_ent": m.entity_id, "b_w": m.weight} for m in changed],
            )
        if new:
            _recount(conn, sorted({m.entity_id for m in new}))

    def _write_relations(self, conn: Connection, rels: Sequence[Relation], now: Any) -> None:
        """Insert new relations; a known one changes only by being closed (valid_to set once)."""
        known: set[str] = set()
        for part in chunks([r.id for r in rels]):
            known.update(conn.execute(select(R.c.id).where(R.c.id.in_(part))).scalars())
        closing = [{"b_id": r.id, "b_to": r.valid_to} for r in rels if r.id in known and r.valid_to is not None]
        if closing:
            conn.execute(
                update(R).where(R.c.id == bindparam("b_id"), R.c.valid_to.is_(None)).values(valid_to=bindparam("b_to")),
                closing,
            )
        rows = [
            {"id": r.id, "tenant": r.tenant, "user_id": r.user_id, "subject_id": r.subject_id,
             "predicate": r.predicate, "object_id": r.object_id, "memory_id": r.memory_id,
             "valid_from": r.valid_from, "valid_to": r.valid_to, "weight": r.weight, "created_at": now}
            for r in rels if r.id not in known
        ]
        if rows:
            conn.execute(insert(R), rows)

    def delete_memories(self, tenant: str, memory_ids: Sequence[str]) -> None:
        """Drop the memories' mentions and relations, then entities no memory mentions any more."""
        ids = sorted(set(memory_ids))
        if not ids:
            return
        scopes: set[Scope] = set()
        with self._write() as conn:
            affected: set[str] = set()
            for part in chunks(ids):
                for row in conn.execute(
                    select(M.c.user_id, M.c.entity_id).where(not_indexed(M.c.tenant) == tenant, M.c.memory_id.in_(part))
                ):
                    affected.add(row.entity_id)
                    scopes.add((tenant, row.user_id))
                scopes.update((tenant, u) for u in conn.execute(
                    select(R.c.user_id).where(not_indexed(R.c.tenant) == tenant, R.c.memory_id.in_(part)).distinct()
                ).scalars())
                conn.execute(delete(M).where(not_indexed(M.c.tenant) == tenant, M.c.memory_id.in_(part)))
                conn.execute(delete(R).where(not_indexed(R.c.tenant) == tenant, R.c.memory_id.in_(part)))
            orphans: set[str] = set()
            for part in chunks(sorted(affected)):
                still = set(conn.execute(select(M.c.entity_id).where(M.c.entity_id.in_(part)).distinct()).scalars())
                orphans.update(set(part) - still)
            for part in chunks(sorted(orphans)):
                conn.execute(delete(R).where(or_(R.c.subject_id.in_(part), R.c.object_id.in_(part))))
                conn.execute(delete(E).where(E.c.id.in_(part)))
            _recount(conn, sorted(affected - orphans))
            for t_, u_ in sorted(scopes):
                _bump_graph_version(conn, t_, u_)
        self._invalidate(sorted(scopes))

    def delete_scope(self, tenant: str, user_id: str) -> int:
        """Remove every entity, relation and mention of the scope; returns the entities removed."""
        with self._write() as conn:
            where = (E.c.tenant == tenant, E.c.user_id == user_id)
            removed = conn.execute(select(func.count()).select_from(E).where(*where)).scalar_one()
            conn.execute(delete(M).where(M.c.tenant == tenant, M.c.user_id == user_id))
            conn.execute(delete(R).where(R.c.tenant == tenant, R.c.user_id == user_id))
            conn.execute(delete(E).where(*where))
            # No row is created for a scope being emptied (it would keep the user's id).
            conn.execute(update(S).where(S.c.tenant == tenant, S.c.user_id == user_id)
                         .values(graph_version=S.c.graph_version + 1))
        self._invalidate([(tenant, user_id)])
        return int(removed)

    # -- reads ----------------------------------------------------------------------------

    def entities(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Entity]:
        check_limit(limit)
        stmt = (
            select(E).where(E.c.tenant == tenant, E.c.user_id == user_id, E.c.id > decode_cursor(cursor))
            .order_by(E.c.id).limit(limit + 1)
        )
        with self._read() as conn:
            items = [_entity(row) for row in conn.execute(stmt)]
        more = len(items) > limit
        items = items[:limit]
        return Page[Entity](items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    def relations(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Relation]:
        check_limit(limit)
        stmt = (
            select(R).where(R.c.tenant == tenant, R.c.user_id == user_id, R.c.id > decode_cursor(cursor))
            .order_by(R.c.id).limit(limit + 1)
        )
        with self._read() as conn:
            items = [_relation(row) for row in conn.execute(stmt)]
        more = len(items) > limit
        items = items[:limit]
        return Page[Relation](items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    def entities_of(self, tenant: str, memory_ids: Sequence[str]) -> dict[str, list[Entity]]:
        """Every requested memory id -> the entities it mentions, by name (empty when none)."""
        out: dict[str, list[Entity]] = {mid: [] for mid in memory_ids}
        with self._read() as conn:
            for part in chunks(sorted(set(memory_ids))):
                stmt = (
                    select(M.c.memory_id, E).join(E, and_(E.c.id == M.c.entity_id, E.c.tenant == M.c.tenant))
                    .where(not_indexed(M.c.tenant) == tenant, M.c.memory_id.in_(part))
                    .order_by(M.c.memory_id, E.c.name, E.c.id)
                )
                for row in conn.execute(stmt):
                    out[row.memory_id].append(_entity(row))
        for found in out.values():
            found.sort(key=lambda e: (e.name, e.id))  # code-point order on every database
        return out

    def find_entities(self, tenant: str, user_id: str, names: Sequence[str]) -> list[Entity]:
        """Entities whose normalised name or alias equals one of `names` once normalised."""
        wanted = {n for n in (normalize_name(x) for x in names) if n}
        if not wanted:
            return []
        with self._scope_lock((tenant, user_id)):
            cache = self._scope(tenant, user_id)
            ids = sorted({cache.entity_ids[i] for key in wanted for i in cache.names.get(key, ())})
        found: list[Entity] = []
        with self._read() as conn:
            for part in chunks(ids):
                found.extend(_entity(row) for row in conn.execute(select(E).where(E.c.id.in_(part))))
        return order_found(names, found)

    def snapshot(self, tenant: str, user_id: str) -> GraphSnapshot:
        """The scope's matrices; node order is first-write order and stable until a delete."""
        with self._scope_lock((tenant, user_id)):
            return self._scope(tenant, user_id).build()

    def catalog(self, tenant: str, user_id: str) -> GraphCatalog:
        """Entities (in snapshot order) and relations, straight from the cache: no matrices are built."""
        with self._scope_lock((tenant, user_id)):
            cache = self._scope(tenant, user_id)
            return GraphCatalog(list(cache.entity_ids), list(cache.display), list(cache.facts.values()))

    def close(self) -> None:
        with self._lock:
            self._cache.clear()


def _graph_version(conn: Connection, tenant: str, user_id: str) -> int | None:
    stmt = select(S.c.graph_version).where(S.c.tenant == tenant, S.c.user_id == user_id)
    return conn.execute(stmt).scalar_one_or_none()


def _bump_graph_version(conn: Connection, tenant: str, user_id: str) -> int:
    """graph_version + 1 (a new scope row starts from the clock); the new version."""
    v = fresh_version()
    stmt = dialect_insert(conn.dialect.name, S).values(tenant=tenant, user_id=user_id, version=v, graph_version=v)
    stmt = stmt.on_conflict_do_update(
        index_elements=[S.c.tenant, S.c.user_id], set_={"graph_version": S.c.graph_version + 1},
    ).returning(S.c.graph_version)
    return int(conn.execute(stmt).scalar_one())


def _recount(conn: Connection, entity_ids: Sequence[str]) -> None:
    """mention_count := the number of memories mentioning the entity."""
    for part in chunks(entity_ids):
        count = select(func.count()).select_from(M).where(M.c.entity_id == E.c.id).scalar_subquery()
        conn.execute(update(E).where(E.c.id.in_(part)).values(mention_count=count))


def _entity(row: Row[Any]) -> Entity:
    return Entity(
        id=row.id, tenant=row.tenant, user_id=row.user_id, name=row.name, label=row.label,
        aliases=list(row.aliases or []), mention_count=row.mention_count,
    )


def _relation(row: Row[Any]) -> Relation:
    return Relation(
        id=row.id, tenant=row.tenant, user_id=row.user_id, subject_id=row.subject_id,
        predicate=row.predicate, object_id=row.object_id, memory_id=row.memory_id,
        valid_from=row.valid_from, valid_to=row.valid_to, weight=row.weight,
    )
