"""Applies outbox entries to the derived stores (vector index, graph).

SQL is the source of truth: a change commits its cubes and outbox entries in one transaction,
then the entries are applied (`memsvc.outbox` decides when, and retries). Every op converges the
derived store on what SQL holds *when the op runs*, not on what it held when the entry was
written, so an entry applied late, twice, or after a later entry of the same memory does no
harm:

- vector ops (`upsert_vectors`, `set_status`, `delete_vectors`): a memory SQL no longer has, or
  holds as deleted, loses its point; any other gets its point (`upsert_vectors`, and a
  `delete_vectors` whose memory was restored since) or its payload (`set_status`);
- graph ops: `index_graph` indexes the memories SQL still holds; `delete_graph` drops the
  memories' graph records unless SQL holds the memory again (then it re-indexes it);
  `reindex_graph` drops and re-indexes (a content change);
- `purge_scope` deletes the scope's points and graph records whose memory SQL no longer holds,
  so an entry replayed after new writes of the same user leaves those writes alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from memsvc.errors import BackendUnavailable
from memsvc.learn.second import SecondRows
from memsvc.models import Entity, MemoryCube, MemoryStatus, Mention, OutboxEntry, OutboxOp, Relation
from memsvc.ports import (
    Embedder,
    GraphStore,
    RecordStore,
    VectorFilter,
    VectorIndex,
    VectorPayload,
    VectorPoint,
    text_digest,
)

log = logging.getLogger(__name__)

GraphExtractor = Callable[[Sequence[MemoryCube]], tuple[list[Entity], list[Relation], list[Mention]]]
GraphPrefetch = Callable[[Sequence[str]], None]
"""Texts the graph extractor will read soon: it may start on them (`ParseAhead`); a hint, never required."""

SCAN_PAGE = 1000
VECTOR_OPS = frozenset({OutboxOp.UPSERT_VECTORS, OutboxOp.SET_STATUS, OutboxOp.DELETE_VECTORS})
GRAPH_OPS = frozenset({OutboxOp.INDEX_GRAPH, OutboxOp.DELETE_GRAPH, OutboxOp.REINDEX_GRAPH})


def payload_of(cube: MemoryCube) -> VectorPayload:
    return VectorPayload(
        tenant=cube.tenant,
        user_id=cube.user_id,
        type=cube.type,
        status=cube.status,
        created_at=cube.created_at,
        agent_id=cube.agent_id,
        session_id=cube.session_id,
        event_time=cube.event_time,
        valid_from=cube.valid_from,
        valid_to=cube.valid_to,
        metadata=cube.metadata,
        digest=text_digest(cube.content),
    )


def indexed(cube: MemoryCube) -> bool:
    """Whether the cube belongs in the derived stores (every status but deleted)."""
    return indexed_status(cube.status.value)


def indexed_status(status: str) -> bool:
    """`indexed` for a stored status alone (what reconciliation reads instead of whole memories)."""
    return status != MemoryStatus.DELETED.value


class Indexer:
    def __init__(
        self,
        records: RecordStore,
        vectors: VectorIndex,
        embedder: Embedder,
        graph: GraphStore | None = None,
        graph_extractor: GraphExtractor | None = None,
        graph_prefetch: GraphPrefetch | None = None,
        second: SecondRows | None = None,
    ) -> None:
        self.records = records
        # The read gate's second embedder: rows of every indexed memory's text, stored with its scope
        # (None: searches and retention sweeps embed the ones they need).
        self.second = second
        self.vectors = vectors
        self.embedder = embedder
        self.graph = graph
        self.graph_extractor = graph_extractor
        self.graph_prefetch = graph_prefetch
        # Graph extraction reads the scope's relations to supersede them: one at a time per scope
        # in this process, so two writes of a user cannot both miss each other's facts.
        self._graph_locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def embed(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        return self.embedder.embed([c.content for c in cubes])

    def stored_or_embedded(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        """The cubes' vectors as the index holds them where they embed the cube's current text (the
        payload's digest says so), the rest embedded now: a sweep over a scope reads its vectors back
        instead of running the model over every memory again."""
        if not cubes:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        try:
            stored = self.vectors.vectors([c.id for c in cubes])
        except BackendUnavailable as exc:  # a sweep or merge need not wait for the index: embed instead
            log.warning("vector index unavailable (%s): embedding %d memories", exc, len(cubes))
            stored = {}
        out: list[np.ndarray | None] = []
        for c in cubes:
            digest, vector = stored.get(c.id, (None, None))
            current = digest == text_digest(c.content) and vector is not None and vector.shape == (self.embedder.dim,)
            out.append(vector if current else None)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            for i, v in zip(todo, self.embed([cubes[i] for i in todo]), strict=True):
                out[i] = np.asarray(v, dtype=np.float32)
        return np.stack([v for v in out if v is not None])

    def apply(self, entry: OutboxEntry, embeddings: Mapping[str, np.ndarray] | None = None) -> None:
        """Apply one entry (see the module doc); raises when a derived store fails."""
        op, ids = entry.op, entry.memory_ids
        if op in VECTOR_OPS:
            self._sync_vectors(entry.tenant, ids, embeddings or {}, full=op is not OutboxOp.SET_STATUS)
        elif op in GRAPH_OPS:
            self._sync_graph(entry.tenant, str(entry.payload.get("user_id", "")), ids, op)
        elif op is OutboxOp.PURGE_SCOPE:
            self.purge_scope(entry.tenant, str(entry.payload["user_id"]))
        else:  # pragma: no cover - enum is exhaustive
            raise ValueError(f"unknown outbox op {op}")

    # -- vectors --------------------------------------------------------------------------
    def _sync_vectors(self, tenant: str, ids: Sequence[str], embeddings: Mapping[str, np.ndarray], *, full: bool) -> None:
        if not ids:
            return
        found = {c.id: c for c in self.records.get_memories(tenant, ids)}
        gone = [i for i in dict.fromkeys(ids) if i not in found or not indexed(found[i])]
        live = [found[i] for i in dict.fromkeys(ids) if i in found and indexed(found[i])]
        if gone:
            self.vectors.delete(gone)
        if not live:
            return
        if not full:
            self.vectors.set_payload([(c.id, payload_of(c)) for c in live])
            return
        # The request's own vectors fit only the content it wrote (version 1); anything changed
        # since is embedded again.
        given = {c.id: embeddings[c.id] for c in live if c.version == 1 and c.id in embeddings}
        missing = [c for c in live if c.id not in given]
        if missing:
            given.update(zip((c.id for c in missing), self.embed(missing), strict=True))
        self.vectors.upsert([
            VectorPoint(c.id, np.asarray(given[c.id]).tolist(), c.content, payload_of(c)) for c in live
        ])
        if self.second is not None:
            self._second_rows(tenant, live)

    def _second_rows(self, tenant: str, cubes: Sequence[MemoryCube]) -> None:
        """Store the second embedder's rows of the cubes' texts (those not stored yet). Derived data
        that a search can still embed on demand: a failure is logged, it does not hold the entry back."""
        assert self.second is not None
        by_scope: dict[str, list[str]] = {}
        for c in cubes:
            by_scope.setdefault(c.user_id, []).append(c.content)
        try:
            for user_id, texts in by_scope.items():
                self.second.rows(tenant, user_id, texts)
        except Exception:
            log.exception("second-embedder rows of %d memories not stored", len(cubes))

    # -- graph ----------------------------------------------------------------------------
    def prefetch_graph(self, texts: Sequence[str]) -> None:
        """Tell the graph extractor which texts it will read soon (best effort)."""
        if self.graph is not None and self.graph_extractor is not None and self.graph_prefetch is not None:
            self.graph_prefetch(texts)

    def _graph_lock(self, tenant: str, user_id: str) -> threading.Lock:
        with self._guard:
            return self._graph_locks.setdefault((tenant, user_id), threading.Lock())

    def _sync_graph(self, tenant: str, user_id: str, ids: Sequence[str], op: OutboxOp) -> None:
        if self.graph is None or not ids:
            return
        cubes = [c for c in self.records.get_memories(tenant, ids) if indexed(c)]
        live = {c.id for c in cubes}
        with self._graph_lock(tenant, user_id):
            if op is OutboxOp.REINDEX_GRAPH:
                self.graph.delete_memories(tenant, ids)
            elif op is OutboxOp.DELETE_GRAPH:
                self.graph.delete_memories(tenant, ids)
                if not live:
                    return
            if cubes and self.graph_extractor is not None:
                entities, relations, mentions = self.graph_extractor(cubes)
                self.graph.upsert(tenant, user_id, entities, relations, mentions)

    # -- purge ----------------------------------------------------------------------------
    def purge_scope(self, tenant: str, user_id: str) -> dict[str, int]:
        """Delete the scope's points and graph records whose memory SQL no longer holds; counts."""
        flt = VectorFilter(tenant=tenant, user_id=user_id)
        removed = 0
        cursor: str | None = None
        while True:
            # Points first, then SQL: a point written after this page was read belongs to a memory
            # committed before its point, so SQL shows that memory and it stays.
            page, cursor = self.vectors.scan(flt, SCAN_PAGE, cursor)
            stale = self._not_held(tenant, [p.id for p in page])
            if stale:
                self.vectors.delete(stale)
                removed += len(stale)
            if cursor is None:
                break
        graph_removed = 0
        if self.graph is not None:
            with self._graph_lock(tenant, user_id):
                snap = self.graph.snapshot(tenant, user_id)
                stale = self._not_held(tenant, snap.memory_ids)
                if stale:  # also drops the entities only these memories named
                    self.graph.delete_memories(tenant, stale)
                    graph_removed = len(stale)
        return {"points": removed, "graph_memories": graph_removed}

    def _not_held(self, tenant: str, ids: Sequence[str]) -> list[str]:
        held = {c.id for c in self.records.get_memories(tenant, ids) if indexed(c)}
        return [i for i in ids if i not in held]
