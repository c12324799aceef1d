"""`FalkorGraphStore`: the `GraphStore` port on a FalkorDB server (redis protocol).

One graph per (tenant, user), named by a hash of the pair so user text never reaches a key
or a query string; all values travel as Cypher parameters.

    (:Entity {id, name, norm_name, label, aliases, alias_norms, mention_count, created_at})
    (:Memory {id})-[:MENTIONS {weight}]->(:Entity)
    (:Entity)-[:REL {id, predicate, memory_id, valid_from, valid_to, weight, created_at}]->(:Entity)

Two plain redis keys per tenant/scope sit beside the graphs: a hash memory id -> user id (so
`entities_of` and `delete_memories`, which get no user id, find the right graph), and a
per-graph change token that lets every API node reuse a snapshot until the graph changes.
FalkorDB has no multi-query transactions: a failed upsert may leave part of its rows, and a
replay of the same upsert (ids are deterministic) completes it.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from falkordb import FalkorDB
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memsvc.config import FalkorGraph
from memsvc.errors import BackendUnavailable
from memsvc.graph.ids import normalize_name
from memsvc.graph.matrix import build_adjacency, build_mentions
from memsvc.models import Entity, Mention, Relation, as_utc, utcnow
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

PREFIX = "memsvc"
_ENTITY_FIELDS = "e.id, e.name, e.label, e.aliases, e.mention_count"
_REL_FIELDS = "x.id, s.id, x.predicate, o.id, x.memory_id, x.valid_from, x.valid_to, x.weight"
_INDEXES = (
    "CREATE INDEX FOR (e:Entity) ON (e.id)",
    "CREATE INDEX FOR (e:Entity) ON (e.norm_name)",
    "CREATE INDEX FOR (m:Memory) ON (m.id)",
    "CREATE INDEX FOR ()-[x:REL]-() ON (x.id)",
    "CREATE INDEX FOR ()-[x:REL]-() ON (x.memory_id)",
)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def graph_name(tenant: str, user_id: str) -> str:
    """The FalkorDB graph key of a scope (a hash: no user text in keys)."""
    return f"{PREFIX}:g:{_digest(tenant, user_id)}"


class FalkorGraphStore:
    """The graph on a FalkorDB server; one graph per user scope."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, password: str | None = None,
                 *, max_cached_scopes: int = 256) -> None:
        self._db = FalkorDB(host=host, port=port, password=password)
        self._redis = self._db.connection
        self._indexed: set[str] = set()
        self._snapshots: OrderedDict[str, tuple[str, GraphSnapshot]] = OrderedDict()
        self._max_cached = max_cached_scopes
        self._lock = threading.Lock()
        self.builds = 0  # snapshots built from the server (observability and tests)

    @classmethod
    def from_config(cls, cfg: FalkorGraph) -> FalkorGraphStore:
        return cls(cfg.host, cfg.port, cfg.password)

    # -- plumbing -------------------------------------------------------------------------

    def _query(self, name: str, q: str, params: dict[str, Any] | None = None, *, ro: bool = False) -> Any:
        graph = self._db.select_graph(name)
        with _translate_errors():
            return graph.ro_query(q, params) if ro else graph.query(q, params)

    def _rows(self, name: str, q: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """A read-only query's rows; a graph never written reads as empty."""
        try:
            return list(self._query(name, q, params, ro=True).result_set)
        except ResponseError as exc:
            if "empty key" in str(exc):
                return []
            raise

    def _exists(self, name: str) -> bool:
        with _translate_errors():
            return bool(self._redis.exists(name))

    def _ensure_indexes(self, name: str) -> None:
        if name in self._indexed:
            return
        for stmt in _INDEXES:
            try:
                self._query(name, stmt)
            except ResponseError as exc:
                if "already indexed" not in str(exc):
                    raise
        self._indexed.add(name)

    def _memory_key(self, tenant: str) -> str:
        return f"{PREFIX}:mem:{_digest(tenant)}"

    def _token_key(self, name: str) -> str:
        return f"{name}:token"

    def _touch(self, name: str) -> None:
        """Mark the graph changed (after its writes land, so no reader caches a half-old token)."""
        with _translate_errors():
            self._redis.set(self._token_key(name), uuid.uuid4().hex)

    # -- writes ---------------------------------------------------------------------------

    def upsert(
        self, tenant: str, user_id: str, entities: Sequence[Entity],
        relations: Sequence[Relation], mentions: Sequence[Mention],
    ) -> None:
        """Merge entities by id, add relations by id and mentions by (memory, entity); idempotent."""
        check_scope(tenant, user_id, entities, relations, mentions)
        ents, rels, ments = dedupe_entities(entities), dedupe_relations(relations), dedupe_mentions(mentions)
        if not (ents or rels or ments):
            return
        name = graph_name(tenant, user_id)
        self._ensure_indexes(name)
        now = _iso(utcnow())
        stored: dict[str, tuple[str, str | None, list[str]]] = {}
        for part in chunks([e.id for e in ents]):
            for eid, ename, label, aliases in self._rows(
                name, "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id, e.name, e.label, e.aliases", {"ids": list(part)}
            ):
                stored[eid] = (ename, label, list(aliases or []))
        outside = referenced_ids(rels, ments) - {e.id for e in ents}
        if outside:
            found = {
                row[0] for part in chunks(sorted(outside))
                for row in self._rows(name, "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id", {"ids": list(part)})
            }
            if outside - found:
                raise missing_entities(tenant, user_id, outside - found)
        rows = []
        for e in ents:
            if e.id in stored:
                ename, label, old = stored[e.id]
                aliases, label = merge_aliases(ename, old, [e.name, *e.aliases]), label or e.label
            else:
                ename, label, aliases = e.name, e.label, e.aliases
            rows.append({"id": e.id, "name": ename, "norm": normalize_name(ename), "label": label,
                         "aliases": aliases, "alias_norms": sorted(alias_keys(ename, aliases)),
                         "created_at": now})
        for epart in chunks(rows):
            self._query(name, (
                "UNWIND $rows AS r MERGE (e:Entity {id: r.id}) "
                "ON CREATE SET e.mention_count = 0, e.created_at = r.created_at "
                "SET e.name = r.name, e.norm_name = r.norm, e.label = r.label, e.aliases = r.aliases, "
                "e.alias_norms = r.alias_norms"
            ), {"rows": list(epart)})
        for mpart in chunks(ments):
            self._query(name, (
                "UNWIND $rows AS r MATCH (e:Entity {id: r.e}) MERGE (m:Memory {id: r.m}) "
                "MERGE (m)-[x:MENTIONS]->(e) SET x.weight = r.w"
            ), {"rows": [{"m": m.memory_id, "e": m.entity_id, "w": float(m.weight)} for m in mpart]})
        self._recount(name, sorted({m.entity_id for m in ments}))
        for rpart in chunks(rels):
            self._query(name, (
                "UNWIND $rows AS r MATCH (s:Entity {id: r.s}) MATCH (o:Entity {id: r.o}) "
                "MERGE (s)-[x:REL {id: r.id}]->(o) ON CREATE SET x.predicate = r.p, x.memory_id = r.m, "
                "x.valid_from = r.vf, x.valid_to = r.vt, x.weight = r.w, x.created_at = r.c "
                # a known relation changes only by being closed (valid_to set once)
                "ON MATCH SET x.valid_to = coalesce(x.valid_to, r.vt)"
            ), {"rows": [
                {"id": r.id, "s": r.subject_id, "o": r.object_id, "p": r.predicate, "m": r.memory_id,
                 "vf": _iso(r.valid_from), "vt": _iso(r.valid_to), "w": float(r.weight), "c": now}
                for r in rpart
            ]})
        memory_ids = {m.memory_id for m in ments} | {r.memory_id for r in rels if r.memory_id}
        if memory_ids:
            with _translate_errors():
                self._redis.hset(self._memory_key(tenant), mapping=dict.fromkeys(memory_ids, user_id))
        self._touch(name)

    def _recount(self, name: str, entity_ids: Sequence[str]) -> None:
        for part in chunks(entity_ids):
            self._query(name, (
                "MATCH (e:Entity) WHERE e.id IN $ids OPTIONAL MATCH (:Memory)-[x:MENTIONS]->(e) "
                "WITH e, count(x) AS c SET e.mention_count = c"
            ), {"ids": list(part)})

    def delete_memories(self, tenant: str, memory_ids: Sequence[str]) -> None:
        """Drop the memories' mentions and relations, then entities no memory mentions any more."""
        ids = sorted(set(memory_ids))
        if not ids:
            return
        key = self._memory_key(tenant)
        with _translate_errors():
            users = self._redis.hmget(key, ids)
        by_user: dict[str, list[str]] = {}
        for mid, user in zip(ids, users, strict=True):
            if user is not None:
                by_user.setdefault(user, []).append(mid)
        for user_id, mids in sorted(by_user.items()):
            name = graph_name(tenant, user_id)
            if self._exists(name):
                for part in chunks(mids):
                    self._delete_memories_in(name, list(part))
                self._touch(name)
            with _translate_errors():
                self._redis.hdel(key, *mids)

    def _delete_memories_in(self, name: str, mids: list[str]) -> None:
        affected = [row[0] for row in self._rows(
            name, "MATCH (m:Memory)-[:MENTIONS]->(e:Entity) WHERE m.id IN $ids RETURN DISTINCT e.id", {"ids": mids}
        )]
        self._query(name, "MATCH ()-[x:REL]->() WHERE x.memory_id IN $ids DELETE x", {"ids": mids})
        self._query(name, "MATCH (m:Memory) WHERE m.id IN $ids DETACH DELETE m", {"ids": mids})
        self._recount(name, affected)
        self._query(name, "MATCH (e:Entity) WHERE e.id IN $ids AND e.mention_count = 0 DETACH DELETE e",
                    {"ids": affected})

    def delete_scope(self, tenant: str, user_id: str) -> int:
        """Delete the scope's graph; returns the entities removed."""
        name = graph_name(tenant, user_id)
        if not self._exists(name):
            return 0
        removed = self._rows(name, "MATCH (e:Entity) RETURN count(e)")[0][0]
        mids = [row[0] for row in self._rows(name, "MATCH (m:Memory) RETURN m.id")]
        mids += [row[0] for row in self._rows(
            name, "MATCH ()-[x:REL]->() WHERE x.memory_id IS NOT NULL RETURN DISTINCT x.memory_id"
        )]
        with _translate_errors():
            for part in chunks(sorted(set(mids))):
                self._redis.hdel(self._memory_key(tenant), *part)
            self._db.select_graph(name).delete()
            self._redis.delete(self._token_key(name))
        self._indexed.discard(name)
        with self._lock:
            self._snapshots.pop(name, None)
        return int(removed)

    # -- reads ----------------------------------------------------------------------------

    def entities(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Entity]:
        check_limit(limit)
        rows = self._rows(
            graph_name(tenant, user_id),
            f"MATCH (e:Entity) WHERE e.id > $after RETURN {_ENTITY_FIELDS} ORDER BY e.id LIMIT $n",
            {"after": decode_cursor(cursor), "n": limit + 1},
        )
        items = [_entity(tenant, user_id, row) for row in rows[:limit]]
        return Page[Entity](items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)

    def relations(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Relation]:
        check_limit(limit)
        rows = self._rows(
            graph_name(tenant, user_id),
            f"MATCH (s:Entity)-[x:REL]->(o:Entity) WHERE x.id > $after RETURN {_REL_FIELDS} ORDER BY x.id LIMIT $n",
            {"after": decode_cursor(cursor), "n": limit + 1},
        )
        items = [_relation(tenant, user_id, row) for row in rows[:limit]]
        return Page[Relation](items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)

    def entities_of(self, tenant: str, memory_ids: Sequence[str]) -> dict[str, list[Entity]]:
        """Every requested memory id -> the entities it mentions, by name (empty when none)."""
        out: dict[str, list[Entity]] = {mid: [] for mid in memory_ids}
        ids = sorted(set(memory_ids))
        if not ids:
            return out
        with _translate_errors():
            users = self._redis.hmget(self._memory_key(tenant), ids)
        by_user: dict[str, list[str]] = {}
        for mid, user in zip(ids, users, strict=True):
            if user is not None:
                by_user.setdefault(user, []).append(mid)
        for user_id, mids in by_user.items():
            for part in chunks(mids):
                rows = self._rows(
                    graph_name(tenant, user_id),
                    f"MATCH (m:Memory)-[:MENTIONS]->(e:Entity) WHERE m.id IN $ids "
                    f"RETURN m.id, {_ENTITY_FIELDS} ORDER BY m.id, e.name, e.id",
                    {"ids": list(part)},
                )
                for row in rows:
                    out[row[0]].append(_entity(tenant, user_id, row[1:]))
        for found in out.values():
            found.sort(key=lambda e: (e.name, e.id))
        return out

    def find_entities(self, tenant: str, user_id: str, names: Sequence[str]) -> list[Entity]:
        """Entities whose normalised name or alias equals one of `names` once normalised."""
        wanted = sorted({n for n in (normalize_name(x) for x in names) if n})
        if not wanted:
            return []
        rows = self._rows(
            graph_name(tenant, user_id),
            f"MATCH (e:Entity) WHERE e.norm_name IN $names OR any(a IN e.alias_norms WHERE a IN $names) "
            f"RETURN {_ENTITY_FIELDS}",
            {"names": wanted},
        )
        return order_found(names, [_entity(tenant, user_id, row) for row in rows])

    def snapshot(self, tenant: str, user_id: str) -> GraphSnapshot:
        """The scope's matrices (entities and memories in id order); reused until the graph changes."""
        name = graph_name(tenant, user_id)
        with _translate_errors():
            token = self._redis.get(self._token_key(name))
        with self._lock:
            hit = self._snapshots.get(name)
            if hit is not None and token is not None and hit[0] == token:
                self._snapshots.move_to_end(name)
                return hit[1]
        snap = self._build(name, tenant, user_id)
        if token is not None:
            with self._lock:
                self._snapshots[name] = (token, snap)
                while len(self._snapshots) > self._max_cached:
                    self._snapshots.popitem(last=False)
        return snap

    def catalog(self, tenant: str, user_id: str) -> GraphCatalog:
        """The cached snapshot's entities and relations (one snapshot per graph change either way)."""
        snap = self.snapshot(tenant, user_id)
        return GraphCatalog(snap.entity_ids, snap.entity_names, snap.relations)

    def _build(self, name: str, tenant: str, user_id: str) -> GraphSnapshot:
        self.builds += 1
        display = {row[0]: row[1] for row in self._rows(name, "MATCH (e:Entity) RETURN e.id, e.name")}
        entity_ids = sorted(display)
        mention_rows = self._rows(name, "MATCH (m:Memory)-[x:MENTIONS]->(e:Entity) RETURN m.id, e.id, x.weight")
        rel_rows = self._rows(name, (
            "MATCH (s:Entity)-[x:REL]->(o:Entity) "
            "RETURN s.id, o.id, x.weight, x.id, x.predicate, x.memory_id, x.valid_from, x.valid_to"
        ))
        e_idx = {eid: i for i, eid in enumerate(entity_ids)}
        # the three reads are not one transaction: drop rows of entities written in between
        mention_rows = [r for r in mention_rows if r[1] in e_idx]
        rel_rows = [r for r in rel_rows if r[0] in e_idx and r[1] in e_idx]
        memory_ids = sorted({row[0] for row in mention_rows})
        m_idx = {mid: i for i, mid in enumerate(memory_ids)}
        mentions = build_mentions(
            len(memory_ids), len(entity_ids), [m_idx[r[0]] for r in mention_rows],
            [e_idx[r[1]] for r in mention_rows], np.array([r[2] for r in mention_rows], dtype=np.float64),
        )
        adjacency = build_adjacency(
            len(entity_ids), [e_idx[r[0]] for r in rel_rows], [e_idx[r[1]] for r in rel_rows],
            np.array([r[2] for r in rel_rows], dtype=np.float64), mentions,
        )
        relations = [
            Relation(id=r[3], tenant=tenant, user_id=user_id, subject_id=r[0], predicate=r[4], object_id=r[1],
                     memory_id=r[5], valid_from=_dt(r[6]), valid_to=_dt(r[7]), weight=float(r[2]))
            for r in rel_rows
        ]
        return GraphSnapshot(entity_ids, memory_ids, adjacency, mentions,
                             entity_names=[display[e] or "" for e in entity_ids], relations=relations)

    def close(self) -> None:
        with _translate_errors():
            self._redis.close()


def _entity(tenant: str, user_id: str, row: Sequence[Any]) -> Entity:
    eid, name, label, aliases, count = row
    return Entity(id=eid, tenant=tenant, user_id=user_id, name=name, label=label,
                  aliases=list(aliases or []), mention_count=int(count or 0))


def _relation(tenant: str, user_id: str, row: Sequence[Any]) -> Relation:
    rid, s, predicate, o, memory_id, valid_from, valid_to, weight = row
    return Relation(id=rid, tenant=tenant, user_id=user_id, subject_id=s, predicate=predicate, object_id=o,
                    memory_id=memory_id, valid_from=_dt(valid_from), valid_to=_dt(valid_to), weight=float(weight))


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise BackendUnavailable("the FalkorDB server is unavailable") from exc
