"""The graph seams of the write and read paths: extraction on write, PPR recall on read.

Write (`extract`): entities, relations and mentions of the cubes (spaCy offline, or an LLM's
OpenIE when one is configured), then two scope-aware steps against the stored graph:
supersession of single-valued facts (`memsvc.graph.temporal`) and synonym edges from new entity
names to existing ones whose name embeddings are close (HippoRAG 2), computed incrementally:
a scope's name embeddings are cached by entity id and only names not seen before are embedded.

Read (`retrieve`): seeds are the query's entities (exact name/alias match, else the nearest
entity names by embedding) plus the entities of the top dense hits; PPR runs over entities and
memory (passage) nodes together, with the dense hits also seeding their own memory nodes, and a
memory's score is its PPR mass. Relations not valid at the query's time contribute no edge.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from memsvc.graph.extract import GraphRecords, cube_records, extract_graph
from memsvc.graph.ids import relation_id
from memsvc.graph.matrix import build_adjacency
from memsvc.graph.ppr import (
    DEFAULT_DAMPING,
    Walk,
    entity_seeds_from_memories,
    joint_adjacency,
    mention_counts,
    node_specificity,
    path_to,
    rank_memories_joint,
    seed_paths,
)
from memsvc.graph.temporal import supersede, valid_at
from memsvc.models import SPEAKER_KEY, Entity, MemoryCube, MemoryType, Mention, Relation, as_utc, utcnow
from memsvc.ports import Embedder, GraphSnapshot, GraphStore, VectorFilter
from memsvc.read import GraphHit

if TYPE_CHECKING:
    from spacy.language import Language

_SPEAKER_MAX = 80
SYNONYM = "synonym"
CubeExtractor = Callable[[Sequence[MemoryCube]], GraphRecords]


def speaker_of(cube: MemoryCube) -> str | None:
    """Who "I" is in an episodic cube: its `SPEAKER_KEY` metadata, else (cubes written before that
    key existed) the `Alice: ` prefix of its content."""
    if cube.type is not MemoryType.EPISODIC:
        return None
    speaker = cube.metadata.get(SPEAKER_KEY)
    if isinstance(speaker, str) and speaker.strip():
        return speaker.strip()[:_SPEAKER_MAX]
    head, sep, _ = cube.content.partition(": ")
    return head if sep and 0 < len(head) <= _SPEAKER_MAX else None


def synonym_pairs(
    new_vecs: npt.NDArray[np.float32], old_vecs: npt.NDArray[np.float32], threshold: float, top: int
) -> list[tuple[int, int, float]]:
    """(new row, column, cosine) pairs with cosine >= threshold, at most `top` per new row.

    Columns index `old_vecs` then `new_vecs` (new-to-new pairs are listed once, row < column).
    Rows must be L2-normalised.
    """
    if not len(new_vecs):
        return []
    pool = np.vstack([old_vecs, new_vecs]) if len(old_vecs) else new_vecs
    sims = new_vecs @ pool.T
    n_old = len(old_vecs)
    out: list[tuple[int, int, float]] = []
    for i in range(len(new_vecs)):
        row = sims[i].copy()
        row[n_old : n_old + i + 1] = -1.0  # itself and new rows already paired from their side
        cand = np.nonzero(row >= threshold)[0]
        for j in cand[np.argsort(-row[cand], kind="stable")][:top]:
            out.append((i, int(j), float(row[j])))
    return out


def adjacency_at(snap: GraphSnapshot, when: object) -> sp.csr_matrix:
    """The snapshot's adjacency without the relation edges that are not valid at `when`."""
    return _without(snap, [r for r in snap.relations if not valid_at(r, when)])  # type: ignore[arg-type]


def _without(snap: GraphSnapshot, invalid: Sequence[Relation]) -> sp.csr_matrix:
    if not invalid:
        return snap.adjacency
    col = {e: i for i, e in enumerate(snap.entity_ids)}
    invalid = [r for r in invalid if r.subject_id in col and r.object_id in col]
    drop = build_adjacency(
        len(snap.entity_ids), [col[r.subject_id] for r in invalid], [col[r.object_id] for r in invalid],
        [r.weight for r in invalid],
    )
    a = sp.csr_matrix(snap.adjacency - drop)
    a.data[a.data < 1e-12] = 0.0
    a.eliminate_zeros()
    return a


def _epoch(t: datetime | None, default: float) -> float:
    when = as_utc(t)
    return when.timestamp() if when is not None else default


def _invalid_at(starts: npt.NDArray[np.float64], ends: npt.NDArray[np.float64], when: datetime) -> npt.NDArray[np.bool_]:
    """Mask of the relations not valid at `when` (validity bounds as epoch seconds)."""
    t = _epoch(when, 0.0)
    mask: npt.NDArray[np.bool_] = ~((starts <= t) & (ends > t))
    return mask


@dataclass(frozen=True)
class _ScopeWalk:
    """What PPR needs of one snapshot at one set of valid relations, kept across queries."""

    snap: GraphSnapshot
    starts: npt.NDArray[np.float64]  # relation valid_from as epoch seconds (-inf: always)
    ends: npt.NDArray[np.float64]  # relation valid_to (+inf: open)
    invalid: bytes  # packed mask of the relations left out
    adjacency: sp.csr_matrix  # entity graph at that validity
    mentions: sp.csr_matrix  # hub-scaled memory x entity
    specificity: npt.NDArray[np.float64]
    walk: Walk  # over the joint entity + memory graph



class GraphService:
    """Turns cubes into graph records and queries into PPR-ranked memories."""

    def __init__(
        self, store: GraphStore, nlp: Language, *, embedder: Embedder | None = None,
        extractor: CubeExtractor | None = None, damping: float = DEFAULT_DAMPING,
        dense_seed_weight: float = 0.5, dense_seeds: int = 5, passage_weight: float = 0.5,
        synonym_threshold: float = 0.85, synonym_top: int = 5, query_match_threshold: float = 0.8,
        hub_exponent: float = 0.5, max_cached_scopes: int = 64,
    ) -> None:
        self.store = store
        self.nlp = nlp
        self.embedder = embedder
        self.extractor = extractor
        self.damping = damping
        self.dense_seed_weight = dense_seed_weight
        self.dense_seeds = dense_seeds
        self.passage_weight = passage_weight
        self.synonym_threshold = synonym_threshold
        self.synonym_top = synonym_top
        self.query_match_threshold = query_match_threshold
        # memory<->entity edges of the PPR graph are scaled by (memories mentioning the entity)^-x,
        # so an entity named everywhere (a speaker) does not short-circuit every walk
        self.hub_exponent = hub_exponent
        self._max_cached = max_cached_scopes
        self._name_vecs: OrderedDict[tuple[str, str], dict[str, npt.NDArray[np.float32]]] = OrderedDict()
        self._walks: OrderedDict[tuple[str, str], _ScopeWalk] = OrderedDict()
        self._walks_lock = threading.Lock()

    # -- write ----------------------------------------------------------------------------

    def extract(self, cubes: Sequence[MemoryCube]) -> tuple[list[Entity], list[Relation], list[Mention]]:
        recs = self.extractor(cubes) if self.extractor else cube_records(self.nlp, cubes, speaker_of)
        by_scope: dict[tuple[str, str], list[Relation]] = defaultdict(list)
        for r in recs.relations:
            by_scope[(r.tenant, r.user_id)].append(r)
        ents_by_scope: dict[tuple[str, str], list[Entity]] = defaultdict(list)
        for e in recs.entities:
            ents_by_scope[(e.tenant, e.user_id)].append(e)
        relations: list[Relation] = []
        for scope in dict.fromkeys([*by_scope, *ents_by_scope]):
            snap = self.store.snapshot(*scope)
            new, closed = supersede(snap.relations, by_scope.get(scope, []))
            relations.extend(new)
            relations.extend(closed)
            relations.extend(self._synonyms(scope, snap, ents_by_scope.get(scope, [])))
        return list(recs.entities), relations, list(recs.mentions)

    def _scope_vecs(self, scope: tuple[str, str], snap: GraphSnapshot) -> dict[str, npt.NDArray[np.float32]]:
        """Name embeddings of the scope's stored entities (embeds only names not cached yet)."""
        assert self.embedder is not None
        cache = self._name_vecs.get(scope)
        if cache is None:
            cache = self._name_vecs[scope] = {}
            while len(self._name_vecs) > self._max_cached:
                self._name_vecs.popitem(last=False)
        self._name_vecs.move_to_end(scope)
        if snap.entity_names:
            missing = [(e, n) for e, n in zip(snap.entity_ids, snap.entity_names, strict=True) if e not in cache]
            if missing:
                vecs = self.embedder.embed([n for _, n in missing])
                cache.update((e, np.asarray(v, dtype=np.float32)) for (e, _), v in zip(missing, vecs, strict=True))
        return cache

    def _synonyms(self, scope: tuple[str, str], snap: GraphSnapshot, entities: Sequence[Entity]) -> list[Relation]:
        if self.embedder is None or not entities:
            return []
        known = set(snap.entity_ids)
        fresh = [e for e in entities if e.id not in known]
        if not fresh:
            return []
        cache = self._scope_vecs(scope, snap)
        old_ids = [e for e in snap.entity_ids if e in cache]
        dim = self.embedder.dim
        old = np.vstack([cache[e] for e in old_ids]) if old_ids else np.zeros((0, dim), dtype=np.float32)
        new = np.asarray(self.embedder.embed([e.name for e in fresh]), dtype=np.float32)
        cache.update((e.id, v) for e, v in zip(fresh, new, strict=True))
        pool = [*old_ids, *(e.id for e in fresh)]
        tenant, user_id = scope
        out = []
        for i, j, sim in synonym_pairs(new, old, self.synonym_threshold, self.synonym_top):
            a, b = fresh[i].id, pool[j]
            out.append(Relation(
                id=relation_id(tenant, user_id, a, SYNONYM, b, None), tenant=tenant, user_id=user_id,
                subject_id=a, predicate=SYNONYM, object_id=b, weight=round(sim, 6),
            ))
        return out

    # -- read -----------------------------------------------------------------------------

    def query_entities(self, tenant: str, user_id: str, query: str) -> list[Entity]:
        return self.store.find_entities(tenant, user_id, extract_graph(self.nlp, query).names())

    def _query_seeds(self, tenant: str, user_id: str, query: str, snap: GraphSnapshot) -> dict[int, float]:
        """Entity columns seeded by the query: exact name/alias matches, else embedding matches."""
        col = {e: i for i, e in enumerate(snap.entity_ids)}
        extraction = extract_graph(self.nlp, query)
        found = self.store.find_entities(tenant, user_id, extraction.names())
        seeds = {col[e.id]: 1.0 for e in found if e.id in col}
        if seeds or self.embedder is None or not snap.entity_names or not extraction.entities:
            return seeds
        cache = self._scope_vecs((tenant, user_id), snap)
        ids = [e for e in snap.entity_ids if e in cache]
        if not ids:
            return seeds
        mat = np.vstack([cache[e] for e in ids])
        q = np.asarray(self.embedder.embed([e.name for e in extraction.entities]), dtype=np.float32)
        sims = q @ mat.T
        for row in sims:
            best = int(np.argmax(row))
            if row[best] >= self.query_match_threshold:
                c = col[ids[best]]
                seeds[c] = max(seeds.get(c, 0.0), float(row[best]))
        return seeds

    def retrieve(
        self, tenant: str, user_id: str, query: str, dense_ids: list[str], flt: VectorFilter, limit: int
    ) -> list[GraphHit]:
        """PPR seeded by the query's entities and the top dense hits (see module doc)."""
        snap = self.store.snapshot(tenant, user_id)
        if not snap.entity_ids or not snap.memory_ids:
            return []
        prepared = self._walk((tenant, user_id), snap, flt.valid_at or utcnow())
        adjacency, specificity = prepared.adjacency, prepared.specificity
        row = {m: i for i, m in enumerate(snap.memory_ids)}
        query_seeds = self._query_seeds(tenant, user_id, query, snap)
        n_e, n_m = len(snap.entity_ids), len(snap.memory_ids)
        seeds = np.zeros(n_e, dtype=np.float64)
        for c, w in query_seeds.items():
            seeds[c] = w
        seeds *= specificity
        if seeds.sum() > 0:
            seeds /= seeds.sum()
        memory_seeds = np.zeros(n_m, dtype=np.float64)
        dense_rows = [row[m] for m in dense_ids[: self.dense_seeds] if m in row]
        for rank, r in enumerate(dense_rows):
            memory_seeds[r] = 1.0 / (rank + 1)
        if memory_seeds.any():
            memory_seeds /= memory_seeds.sum()
            spread = entity_seeds_from_memories(snap.mentions, memory_seeds)
            spread *= specificity
            if spread.sum() > 0:
                seeds += self.dense_seed_weight * spread / spread.sum()
            memory_seeds *= self.passage_weight
        if not seeds.any() and not memory_seeds.any():
            return []
        scores = rank_memories_joint(adjacency, prepared.mentions, seeds, memory_seeds, self.damping, prepared.walk)
        order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:limit]
        names = self._names(tenant, snap, [snap.memory_ids[i] for i in order])
        q_cols = sorted(query_seeds)
        pred = seed_paths(adjacency, q_cols) if q_cols else None
        hits: list[GraphHit] = []
        mentions_csr = sp.csr_matrix(snap.mentions)
        for i in order:
            path: list[str] = []
            if pred is not None:
                row_cols = mentions_csr.indices[mentions_csr.indptr[i] : mentions_csr.indptr[i + 1]]
                reachable = [int(c) for c in row_cols if pred[c] != -2]
                if reachable:
                    nodes = path_to(pred, min(reachable, key=lambda c: len(path_to(pred, c))))
                    path = [names.get(snap.entity_ids[n], snap.entity_ids[n][:8]) for n in nodes]
            hits.append(GraphHit(snap.memory_ids[i], float(scores[i]), path))
        return hits

    def _walk(self, scope: tuple[str, str], snap: GraphSnapshot, when: datetime) -> _ScopeWalk:
        """The scope's PPR walk at `when`, rebuilt only when the snapshot or the set of relations
        valid at `when` changed (stores hand out the same snapshot object until a write)."""
        with self._walks_lock:
            cached = self._walks.get(scope)
        if cached is not None and cached.snap is snap:
            invalid = _invalid_at(cached.starts, cached.ends, when)
            if np.packbits(invalid).tobytes() == cached.invalid:
                with self._walks_lock:
                    if scope in self._walks:
                        self._walks.move_to_end(scope)
                return cached
            starts, ends = cached.starts, cached.ends
        else:
            starts = np.array([_epoch(r.valid_from, -np.inf) for r in snap.relations], dtype=np.float64)
            ends = np.array([_epoch(r.valid_to, np.inf) for r in snap.relations], dtype=np.float64)
            invalid = _invalid_at(starts, ends, when)
        adjacency = _without(snap, [r for r, bad in zip(snap.relations, invalid, strict=True) if bad])
        mentions = snap.mentions
        if self.hub_exponent:
            counts = np.maximum(mention_counts(mentions), 1).astype(np.float64)
            mentions = sp.csr_matrix(mentions @ sp.diags(counts ** -self.hub_exponent))
        prepared = _ScopeWalk(
            snap=snap, starts=starts, ends=ends, invalid=np.packbits(invalid).tobytes(), adjacency=adjacency,
            mentions=mentions, specificity=node_specificity(mention_counts(snap.mentions)),
            walk=Walk.of(joint_adjacency(adjacency, mentions)),
        )
        with self._walks_lock:
            self._walks[scope] = prepared
            self._walks.move_to_end(scope)
            while len(self._walks) > self._max_cached:
                self._walks.popitem(last=False)
        return prepared

    def _names(self, tenant: str, snap: GraphSnapshot, hit_ids: list[str]) -> dict[str, str]:
        """Entity id -> display name (from the snapshot; stores without names are asked)."""
        if snap.entity_names:
            return dict(zip(snap.entity_ids, snap.entity_names, strict=True))
        names: dict[str, str] = {}
        for ents in self.store.entities_of(tenant, hit_ids).values():
            names.update({e.id: e.name for e in ents})
        return names

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
