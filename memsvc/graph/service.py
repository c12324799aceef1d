"""The graph seams of the write and read paths: extraction on write, PPR recall on read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from memsvc.graph.extract import cube_records, extract_graph
from memsvc.graph.ppr import DEFAULT_DAMPING, entity_seeds_from_memories, path_to, rank_memories, seed_paths
from memsvc.models import Entity, MemoryCube, MemoryType, Mention, Relation
from memsvc.ports import GraphStore, VectorFilter
from memsvc.read import GraphHit

if TYPE_CHECKING:
    from spacy.language import Language

_SPEAKER_MAX = 80


def speaker_of(cube: MemoryCube) -> str | None:
    """Who "I" is in an episodic cube ("Alice: I moved…" -> Alice)."""
    if cube.type is not MemoryType.EPISODIC:
        return None
    head, sep, _ = cube.content.partition(": ")
    return head if sep and 0 < len(head) <= _SPEAKER_MAX else None


class GraphService:
    """Turns cubes into graph records and queries into PPR-ranked memories."""

    def __init__(
        self, store: GraphStore, nlp: Language, *, damping: float = DEFAULT_DAMPING,
        dense_seed_weight: float = 0.5, dense_seeds: int = 5,
    ) -> None:
        self.store = store
        self.nlp = nlp
        self.damping = damping
        self.dense_seed_weight = dense_seed_weight
        self.dense_seeds = dense_seeds

    def extract(self, cubes: Sequence[MemoryCube]) -> tuple[list[Entity], list[Relation], list[Mention]]:
        recs = cube_records(self.nlp, cubes, speaker_of)
        return list(recs.entities), list(recs.relations), list(recs.mentions)

    def query_entities(self, tenant: str, user_id: str, query: str) -> list[Entity]:
        return self.store.find_entities(tenant, user_id, extract_graph(self.nlp, query).names())

    def retrieve(
        self, tenant: str, user_id: str, query: str, dense_ids: list[str], flt: VectorFilter, limit: int
    ) -> list[GraphHit]:
        """PPR seeded by the query's entities and the entities of the top dense hits."""
        snap = self.store.snapshot(tenant, user_id)
        if not snap.entity_ids or not snap.memory_ids:
            return []
        col = {e: i for i, e in enumerate(snap.entity_ids)}
        row = {m: i for i, m in enumerate(snap.memory_ids)}
        query_ents = [e for e in self.query_entities(tenant, user_id, query) if e.id in col]
        seeds = np.zeros(len(snap.entity_ids), dtype=np.float64)
        for e in query_ents:
            seeds[col[e.id]] = 1.0
        dense_rows = [row[m] for m in dense_ids[: self.dense_seeds] if m in row]
        if dense_rows:
            w = np.zeros(len(snap.memory_ids), dtype=np.float64)
            for rank, r in enumerate(dense_rows):
                w[r] = 1.0 / (rank + 1)
            spread = entity_seeds_from_memories(snap.mentions, w)
            if spread.sum() > 0:
                seeds += self.dense_seed_weight * spread / spread.sum() * max(1, len(query_ents))
        if not seeds.any():
            return []
        scores = rank_memories(snap.adjacency, snap.mentions, dict(enumerate(seeds)), self.damping)
        order = [int(i) for i in np.argsort(-scores) if scores[i] > 0][: limit * 2]
        names = {e.id: e.name for e in query_ents}
        hit_ids = [snap.memory_ids[i] for i in order]
        for ents in self.store.entities_of(tenant, hit_ids[:limit]).values():
            names.update({e.id: e.name for e in ents})
        pred = seed_paths(snap.adjacency, [col[e.id] for e in query_ents]) if query_ents else None
        hits: list[GraphHit] = []
        for i in order:
            path: list[str] = []
            if pred is not None:
                ent_cols = snap.mentions[i].indices
                reachable = [c for c in ent_cols if pred[c] != -2]
                if reachable:
                    nodes = path_to(pred, min(reachable, key=lambda c: len(path_to(pred, c))))
                    path = [names.get(snap.entity_ids[n], snap.entity_ids[n][:8]) for n in nodes]
            hits.append(GraphHit(snap.memory_ids[i], float(scores[i]), path))
            if len(hits) >= limit:
                break
        return hits

    def memories_mentioning(self, tenant: str, user_id: str, names: list[str]) -> list[str]:
        """Ids of memories that mention any entity named (or aliased) in `names`."""
        ents = self.store.find_entities(tenant, user_id, names)
        if not ents:
            return []
        snap = self.store.snapshot(tenant, user_id)
        col = {e: i for i, e in enumerate(snap.entity_ids)}
        cols = [col[e.id] for e in ents if e.id in col]
        if not cols:
            return []
        hit_rows = np.unique(snap.mentions[:, cols].nonzero()[0])
        return [snap.memory_ids[int(r)] for r in hit_rows]
