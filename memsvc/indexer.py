"""Applies outbox entries to the derived stores (vector index, graph).

SQL is the source of truth: a write commits its cubes and outbox entries in one
transaction, then the indexer applies the entries. Entries that fail stay pending and
are replayed later (and at start-up), so every handler is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from memsvc.models import Entity, MemoryCube, MemoryStatus, Mention, OutboxEntry, OutboxOp, Relation
from memsvc.ports import Embedder, GraphStore, RecordStore, VectorIndex, VectorPayload, VectorPoint

log = logging.getLogger(__name__)

GraphExtractor = Callable[[Sequence[MemoryCube]], tuple[list[Entity], list[Relation], list[Mention]]]


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
    )


class Indexer:
    def __init__(
        self,
        records: RecordStore,
        vectors: VectorIndex,
        embedder: Embedder,
        graph: GraphStore | None = None,
        graph_extractor: GraphExtractor | None = None,
    ) -> None:
        self.records = records
        self.vectors = vectors
        self.embedder = embedder
        self.graph = graph
        self.graph_extractor = graph_extractor

    def embed(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        return self.embedder.embed([c.content for c in cubes])

    def apply(
        self, entries: Sequence[OutboxEntry], embeddings: Mapping[str, np.ndarray] | None = None
    ) -> int:
        """Apply entries in order; returns how many succeeded. Failures stay pending."""
        done: list[int] = []
        for entry in entries:
            try:
                self._apply_one(entry, embeddings or {})
            except Exception as exc:  # a derived store failed: keep the entry for replay
                log.warning("outbox entry %s (%s) failed: %s", entry.id, entry.op, exc)
                if entry.id is not None:
                    self.records.fail_outbox(entry.id, f"{type(exc).__name__}: {exc}")
                continue
            if entry.id is not None:
                done.append(entry.id)
        if done:
            self.records.complete_outbox(done)
        return len(done)

    def replay(self, batch: int = 200, max_rounds: int = 1000) -> int:
        """Apply every pending entry (start-up repair); returns how many were applied."""
        applied = 0
        for _ in range(max_rounds):
            pending = self.records.pending_outbox(limit=batch)
            if not pending:
                break
            ok = self.apply(pending)
            applied += ok
            if ok == 0:  # everything left is failing; try again on the next replay
                break
        return applied

    def _apply_one(self, entry: OutboxEntry, embeddings: Mapping[str, np.ndarray]) -> None:
        p = entry.payload
        if entry.op is OutboxOp.UPSERT_VECTORS:
            cubes = [c for c in self.records.get_memories(entry.tenant, p["ids"]) if c.status is not MemoryStatus.DELETED]
            if not cubes:
                return
            missing = [c for c in cubes if c.id not in embeddings]
            fresh = dict(zip((c.id for c in missing), self.embed(missing), strict=True)) if missing else {}
            self.vectors.upsert([
                VectorPoint(c.id, np.asarray(embeddings.get(c.id, fresh.get(c.id))).tolist(), c.content, payload_of(c))
                for c in cubes
            ])
        elif entry.op is OutboxOp.SET_STATUS:
            cubes = self.records.get_memories(entry.tenant, p["ids"])
            self.vectors.set_payload([(c.id, payload_of(c)) for c in cubes])
        elif entry.op is OutboxOp.DELETE_VECTORS:
            self.vectors.delete(p["ids"])
        elif entry.op is OutboxOp.INDEX_GRAPH:
            if self.graph is None or self.graph_extractor is None:
                return
            cubes = [c for c in self.records.get_memories(entry.tenant, p["ids"]) if c.status is not MemoryStatus.DELETED]
            if cubes:
                entities, relations, mentions = self.graph_extractor(cubes)
                self.graph.upsert(entry.tenant, p["user_id"], entities, relations, mentions)
        elif entry.op is OutboxOp.DELETE_GRAPH:
            if self.graph is not None:
                self.graph.delete_memories(entry.tenant, p["ids"])
        elif entry.op is OutboxOp.PURGE_SCOPE:
            self.vectors.delete_scope(entry.tenant, p["user_id"])
            if self.graph is not None:
                self.graph.delete_scope(entry.tenant, p["user_id"])
        else:  # pragma: no cover - enum is exhaustive
            raise ValueError(f"unknown outbox op {entry.op}")
