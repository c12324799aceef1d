"""The graph seams of the write and read paths: extraction on write, PPR recall on read.

Write (`extract`): entities, relations and mentions of the cubes (spaCy offline, or an LLM's
OpenIE when one is configured), then two scope-aware steps against the stored graph, read from
the store's catalog (entities and relations, no matrices): supersession of single-valued facts
(`memsvc.graph.temporal`) and synonym edges from new entity names to existing ones whose name
embeddings are close (HippoRAG 2), computed incrementally: a scope's name embeddings are a matrix
that grows with the scope (`_NameIndex`), and only names not seen before are embedded; a write
neither rebuilds the scope's matrices nor re-stacks its name vectors.

Read (`retrieve`): seeds are the query's entities (exact name/alias match, else the nearest
entity names by embedding) plus the entities of the top dense hits; PPR runs over entities and
memory (passage) nodes together, with the dense hits also seeding their own memory nodes, and a
memory's score is its PPR mass. Relations not valid at the query's time contribute no edge.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from memsvc.graph.extract import GraphRecords, ParseAhead, cube_records, extract_graph
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
from memsvc.ports import Embedder, GraphCatalog, GraphSnapshot, GraphStore, VectorFilter
from memsvc.read import GraphHit

log = logging.getLogger(__name__)


class NameVectors(Protocol):
    """A scope's entity-name embeddings kept outside the process (`storage.sql.name_vectors.SqlNameVectors`)."""

    def get(self, tenant: str, user_id: str, model: str, names: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put(self, tenant: str, user_id: str, model: str, vectors: Mapping[str, np.ndarray]) -> None: ...

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
    sims = np.hstack([new_vecs @ old_vecs.T, new_vecs @ new_vecs.T]) if len(old_vecs) else new_vecs @ new_vecs.T
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


class _NameIndex:
    """One scope's entity-name embeddings as a matrix whose rows follow the store's entity order.

    `sync` consumes the store's entity list: while it only grows at the end (the SQL store between
    deletes), the new tail is appended and older rows stay where they are; a reordered list
    (a delete, a store that sorts) is re-gathered from the rows already held. Only names never
    embedded before are embedded; names of entities not stored yet can be handed in (`hold`).
    """

    def __init__(self, dim: int) -> None:
        self.lock = threading.Lock()
        self._order: list[str] = []  # the store's entity ids consumed so far
        self.ids: list[str] = []  # ids with a row, in row order
        self._row: dict[str, int] = {}
        self._buf = np.zeros((0, dim), dtype=np.float32)
        self._held: dict[str, npt.NDArray[np.float32]] = {}

    @property
    def matrix(self) -> npt.NDArray[np.float32]:
        return self._buf[: len(self.ids)]

    def hold(self, ids: Sequence[str], vecs: npt.NDArray[np.float32]) -> None:
        """Vectors of entities about to be stored (picked up by the `sync` that first sees them)."""
        if len(self._held) > 10_000:  # entities whose write never landed
            self._held.clear()
        self._held.update(zip(ids, vecs, strict=True))

    def sync(self, entity_ids: Sequence[str], names: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> None:
        n = len(self._order)
        if len(entity_ids) >= n and list(entity_ids[:n]) == self._order:
            fresh = range(n, len(entity_ids))
        else:  # reordered: keep the rows of the entities still there, drop the others
            keep = [e for e in entity_ids if e in self._row]
            rows = self._buf[[self._row[e] for e in keep]] if keep else self._buf[:0]
            self.ids, self._row = [], {}
            self._buf = np.zeros((0, self._buf.shape[1]), dtype=np.float32)
            self._append(keep, rows)
            fresh = range(len(entity_ids))
        self._order = list(entity_ids)
        tail = [(entity_ids[i], names[i] if names else "") for i in fresh if entity_ids[i] not in self._row]
        vecs = {e: v for e, v in ((e, self._held.pop(e, None)) for e, _ in tail) if v is not None}
        todo = [(e, name) for e, name in tail if e not in vecs and name]
        if todo:
            embedded = np.asarray(embed([name for _, name in todo]), dtype=np.float32)
            vecs.update(zip((e for e, _ in todo), embedded, strict=True))
        known = [e for e, _ in tail if e in vecs]
        if known:
            self._append(known, np.vstack([vecs[e] for e in known]))

    def _append(self, ids: list[str], vecs: npt.NDArray[np.float32]) -> None:
        start, end = len(self.ids), len(self.ids) + len(ids)
        if end > len(self._buf):
            grown = np.zeros((max(end, 2 * len(self._buf), 256), self._buf.shape[1]), dtype=np.float32)
            grown[:start] = self._buf[:start]
            self._buf = grown
        self._buf[start:end] = vecs
        for i, e in enumerate(ids, start=start):
            self._row[e] = i
        self.ids.extend(ids)


class GraphService:
    """Turns cubes into graph records and queries into PPR-ranked memories."""

    def __init__(
        self, store: GraphStore, nlp: Language, *, embedder: Embedder | None = None,
        extractor: CubeExtractor | None = None, damping: float = DEFAULT_DAMPING,
        dense_seed_weight: float = 0.5, dense_seeds: int = 5, passage_weight: float = 0.5,
        synonym_threshold: float = 0.85, synonym_top: int = 5, query_match_threshold: float = 0.8,
        hub_exponent: float = 0.5, max_cached_scopes: int = 64, name_vectors: NameVectors | None = None,
    ) -> None:
        self.store = store
        self.nlp = nlp
        self.embedder = embedder
        # a scope's name index is rebuilt from these after a restart or an eviction from `_names_by_scope`
        # instead of embedding every name again (768 names of a LoCoMo conversation: 0.9 s)
        self.name_vectors = name_vectors
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
        self._names_by_scope: OrderedDict[tuple[str, str], _NameIndex] = OrderedDict()
        self._walks: OrderedDict[tuple[str, str], _ScopeWalk] = OrderedDict()
        self._cache_lock = threading.Lock()  # guards both LRUs (walks, name indexes)
        # spaCy extraction only: an LLM extractor reads the cubes, not parses
        self.ahead = ParseAhead(nlp) if extractor is None else None

    # -- write ----------------------------------------------------------------------------

    def prefetch(self, texts: Sequence[str]) -> None:
        """Start parsing texts that `extract` will read (a write's turns, before it embeds them), if
        the parse-ahead worker is free."""
        if self.ahead is not None:
            self.ahead.prefetch(texts)

    def extract(self, cubes: Sequence[MemoryCube]) -> tuple[list[Entity], list[Relation], list[Mention]]:
        if self.extractor is not None:
            recs = self.extractor(cubes)
        else:
            recs = cube_records(self.nlp, cubes, speaker_of, parse=self.ahead.docs if self.ahead else None)
        by_scope: dict[tuple[str, str], list[Relation]] = defaultdict(list)
        for r in recs.relations:
            by_scope[(r.tenant, r.user_id)].append(r)
        ents_by_scope: dict[tuple[str, str], list[Entity]] = defaultdict(list)
        for e in recs.entities:
            ents_by_scope[(e.tenant, e.user_id)].append(e)
        relations: list[Relation] = []
        for scope in dict.fromkeys([*by_scope, *ents_by_scope]):
            catalog = self.store.catalog(*scope)  # no matrices on the write path
            new, closed = supersede(catalog.relations, by_scope.get(scope, []))
            relations.extend(new)
            relations.extend(closed)
            relations.extend(self._synonyms(scope, catalog, ents_by_scope.get(scope, [])))
        return list(recs.entities), relations, list(recs.mentions)

    def _embed_names(self, scope: tuple[str, str], names: Sequence[str], *, keep: bool = True) -> npt.NDArray[np.float32]:
        """Embeddings of a scope's entity names: those `name_vectors` holds for this embedder, the rest
        embedded (and stored there when `keep`). The store is a cache: when it fails, names are embedded."""
        assert self.embedder is not None
        if not names:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        if self.name_vectors is None:
            return np.asarray(self.embedder.embed(list(names)), dtype=np.float32)
        model = self.embedder.model_name
        unique = list(dict.fromkeys(names))
        try:
            found = self.name_vectors.get(*scope, model, unique)
        except Exception:  # noqa: BLE001 - a cache: embed instead
            log.warning("entity-name vectors could not be read; embedding the names", exc_info=True)
            found = {}
        todo = [n for n in unique if n not in found or found[n].shape != (self.embedder.dim,)]
        if todo:
            fresh = dict(zip(todo, np.asarray(self.embedder.embed(todo), dtype=np.float32), strict=True))
            if keep:
                try:
                    self.name_vectors.put(*scope, model, fresh)
                except Exception:  # noqa: BLE001 - the next rebuild embeds them again
                    log.warning("entity-name vectors could not be stored", exc_info=True)
            found.update(fresh)
        return np.stack([found[n] for n in names])

    def _name_index(self, scope: tuple[str, str]) -> _NameIndex:
        """The scope's entity-name embeddings (LRU over scopes); sync it under its lock."""
        assert self.embedder is not None
        with self._cache_lock:
            index = self._names_by_scope.get(scope)
            if index is None:
                index = self._names_by_scope[scope] = _NameIndex(self.embedder.dim)
                while len(self._names_by_scope) > self._max_cached:
                    self._names_by_scope.popitem(last=False)
            self._names_by_scope.move_to_end(scope)
        return index

    def _synonyms(self, scope: tuple[str, str], catalog: GraphCatalog, entities: Sequence[Entity]) -> list[Relation]:
        if self.embedder is None or not entities:
            return []
        known = set(catalog.entity_ids)
        fresh = [e for e in entities if e.id not in known]
        if not fresh:
            return []
        index = self._name_index(scope)
        with index.lock:
            index.sync(catalog.entity_ids, catalog.entity_names, lambda names: self._embed_names(scope, names))
            new = self._embed_names(scope, [e.name for e in fresh])
            pool = [*index.ids, *(e.id for e in fresh)]
            pairs = synonym_pairs(new, index.matrix, self.synonym_threshold, self.synonym_top)
            index.hold([e.id for e in fresh], new)
        tenant, user_id = scope
        out = []
        for i, j, sim in pairs:
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
        q = np.asarray(self.embedder.embed([e.name for e in extraction.entities]), dtype=np.float32)
        index = self._name_index((tenant, user_id))
        with index.lock:
            # the read path reads stored vectors and stores none (recall takes no write lock)
            index.sync(snap.entity_ids, snap.entity_names,
                       lambda names: self._embed_names((tenant, user_id), names, keep=False))
            ids = list(index.ids)
            sims = q @ index.matrix.T if ids else None
        if sims is None:
            return seeds
        for row in sims:
            best = int(np.argmax(row))
            if row[best] >= self.query_match_threshold and ids[best] in col:
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
        with self._cache_lock:
            cached = self._walks.get(scope)
        if cached is not None and cached.snap is snap:
            invalid = _invalid_at(cached.starts, cached.ends, when)
            if np.packbits(invalid).tobytes() == cached.invalid:
                with self._cache_lock:
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
        with self._cache_lock:
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
