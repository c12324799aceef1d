"""A user's knowledge graph for the browser: the most-mentioned entities up to a cap."""

from __future__ import annotations

from typing import Any

from memsvc.models import Entity, MemoryCube, Relation
from memsvc.ports import GraphStore, RecordStore

_PAGE = 1000
_MAX_ENTITIES = 50_000  # read at most this many rows before choosing the most-mentioned
_MAX_RELATIONS = 100_000


def _all_entities(graph: GraphStore, tenant: str, user_id: str) -> list[Entity]:
    out: list[Entity] = []
    cursor: str | None = None
    while len(out) < _MAX_ENTITIES:
        page = graph.entities(tenant, user_id, limit=_PAGE, cursor=cursor)
        out.extend(page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    return out


def _all_relations(graph: GraphStore, tenant: str, user_id: str) -> list[Relation]:
    out: list[Relation] = []
    cursor: str | None = None
    while len(out) < _MAX_RELATIONS:
        page = graph.relations(tenant, user_id, limit=_PAGE, cursor=cursor)
        out.extend(page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    return out


def graph_payload(graph: GraphStore | None, tenant: str, user_id: str, cap: int) -> dict[str, Any]:
    """Nodes (the `cap` most-mentioned entities) and the relations between them, with totals."""
    if graph is None:
        return {"nodes": [], "edges": [], "cap": cap, "total_entities": 0, "total_relations": 0, "truncated": False}
    entities = _all_entities(graph, tenant, user_id)
    chosen = sorted(entities, key=lambda e: (-e.mention_count, e.name.lower(), e.id))[:cap]
    ids = {e.id for e in chosen}
    relations = _all_relations(graph, tenant, user_id)
    # One edge per (subject, predicate, object): the same fact is often stated by several memories.
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in relations:
        if r.subject_id in ids and r.object_id in ids:
            edge = edges.setdefault((r.subject_id, r.predicate, r.object_id), {
                "source": r.subject_id, "target": r.object_id, "predicate": r.predicate, "memory_ids": []})
            if r.memory_id:
                edge["memory_ids"].append(r.memory_id)
    return {
        "nodes": [{"id": e.id, "name": e.name, "label": e.label, "mentions": e.mention_count} for e in chosen],
        "edges": list(edges.values()),
        "cap": cap,
        "total_entities": len(entities),
        "total_relations": len(relations),
        "truncated": len(entities) > len(chosen),
    }


def entity_detail(
    graph: GraphStore | None, records: RecordStore, tenant: str, user_id: str, entity_id: str, limit: int = 50,
) -> tuple[Entity, list[Relation], list[MemoryCube], dict[str, str]] | None:
    """The entity, its relations, the memories that mention it (newest first) and entity names; None if unknown."""
    if graph is None:
        return None
    names = {e.id: e for e in _all_entities(graph, tenant, user_id)}
    entity = names.get(entity_id)
    if entity is None:
        return None
    relations = [r for r in _all_relations(graph, tenant, user_id) if entity_id in (r.subject_id, r.object_id)]
    snap = graph.snapshot(tenant, user_id)
    memory_ids: list[str] = []
    if entity_id in snap.entity_ids:
        column = snap.mentions.tocsc()[:, snap.entity_ids.index(entity_id)]
        memory_ids = [snap.memory_ids[i] for i in column.nonzero()[0]]
    memory_ids += [r.memory_id for r in relations if r.memory_id]
    cubes = [c for c in records.get_memories(tenant, list(dict.fromkeys(memory_ids))) if c.user_id == user_id]
    cubes.sort(key=lambda c: c.created_at, reverse=True)
    facts = list({(r.subject_id, r.predicate, r.object_id): r for r in relations}.values())
    return entity, facts, cubes[:limit], {i: e.name for i, e in names.items()}
