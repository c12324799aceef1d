"""The read pipeline: plan, gather candidates, fuse, pack, explain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memsvc.config import Limits, SearchConfig
from memsvc.errors import InvalidInput
from memsvc.models import EventLog, MemoryCube, MemoryStatus, as_utc, utcnow
from memsvc.ports import Embedder, RecordStore, VectorFilter, VectorIndex
from memsvc.retrieval.filters import matches
from memsvc.retrieval.fusion import Fused, rrf
from memsvc.retrieval.packing import count_tokens, edge_order, pack
from memsvc.retrieval.presets import DEFAULT_PRESET, PRESETS, RetrievalPreset
from memsvc.retrieval.query import classify
from memsvc.schemas import SearchRequest, SearchResult


@dataclass(frozen=True)
class GraphHit:
    memory_id: str
    score: float
    path: list[str]  # query entity -> ... -> entity the memory mentions


# (tenant, user_id, query, dense seed ids, filter, limit) -> ranked graph hits
GraphRetriever = Callable[[str, str, str, list[str], VectorFilter, int], list[GraphHit]]
# (tenant, user_id, entity names) -> ids of memories that mention one of them
EntityResolver = Callable[[str, str, list[str]], list[str]]


@dataclass(frozen=True)
class _Candidate:
    cube: MemoryCube
    fused: Fused
    line: str
    tokens: int


def render(cube: MemoryCube) -> str:
    """One line of reader context: the date the memory is about, then its content."""
    when = as_utc(cube.event_time or cube.valid_from)
    return f"[{when:%Y-%m-%d}] {cube.content}" if when else cube.content


class ReadPipeline:
    def __init__(
        self, records: RecordStore, vectors: VectorIndex, embedder: Embedder,
        config: SearchConfig, limits: Limits,
        graph_retriever: GraphRetriever | None = None, entity_resolver: EntityResolver | None = None,
    ) -> None:
        self.records = records
        self.vectors = vectors
        self.embedder = embedder
        self.config = config
        self.limits = limits
        self.graph_retriever = graph_retriever
        self.entity_resolver = entity_resolver

    def preset(self, name: str | None) -> RetrievalPreset:
        if name is None:
            return DEFAULT_PRESET
        try:
            return PRESETS[name]
        except KeyError:
            raise InvalidInput(f"unknown preset {name!r}", details={"presets": sorted(PRESETS)}) from None

    def filter_for(self, tenant: str, req: SearchRequest) -> VectorFilter | None:
        """The pushed-down filter; None when an entity filter matches no memory at all."""
        f = req.filters
        ids: list[str] | None = None
        if f is not None and f.entities:
            if self.entity_resolver is None:
                raise InvalidInput("entity filters need a graph store")
            ids = self.entity_resolver(tenant, req.user_id, f.entities)
            if not ids:
                return None
        as_of = as_utc(req.as_of)
        return VectorFilter(
            tenant=tenant,
            user_id=req.user_id,
            types=req.types,
            statuses=[MemoryStatus.ACTIVE] if as_of is None else [MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED],
            agent_id=f.agent_id if f else None,
            session_id=f.session_id if f else None,
            valid_at=as_of,
            event_from=as_utc(req.time_range.start) if req.time_range else None,
            event_to=as_utc(req.time_range.end) if req.time_range else None,
            metadata=f.metadata if f and f.metadata else None,
            ids=ids,
        )

    def search(self, tenant: str, req: SearchRequest, *, actor: str | None = None, record: bool = True) -> SearchResult:
        if len(req.query) > self.limits.max_query_chars:
            raise InvalidInput(f"query longer than {self.limits.max_query_chars} characters")
        if req.top_k > self.limits.max_top_k:
            raise InvalidInput(f"top_k must be at most {self.limits.max_top_k}")
        preset = self.preset(req.preset)
        flt = self.filter_for(tenant, req)
        if flt is None:
            return SearchResult(results=[], context="")
        n = max(self.config.candidates, req.top_k * 2)
        rankings: dict[str, list[tuple[str, float]]] = {}
        dense: list[tuple[str, float]] = []
        if "dense" in preset.retrievers or "graph" in preset.retrievers:
            dense = self.vectors.search(self.embedder.embed_query(req.query).tolist(), flt, n)
            if "dense" in preset.retrievers:
                rankings["dense"] = dense
        if "keyword" in preset.retrievers:
            rankings["keyword"] = self.vectors.search_text(req.query, flt, n)
        paths: dict[str, list[str]] = {}
        if "graph" in preset.retrievers and self.graph_retriever is not None:
            hits = self.graph_retriever(tenant, req.user_id, req.query, [i for i, _ in dense], flt, n)
            rankings["graph"] = [(h.memory_id, h.score) for h in hits]
            paths = {h.memory_id: h.path for h in hits}
        fused = rrf(rankings, k=self.config.rrf_k if preset.rrf_k is None else preset.rrf_k, weights=preset.weights, tie_tolerance=preset.tie_tolerance)
        candidates = self._load(tenant, flt, fused[: max(n, req.top_k)])
        chosen = pack(candidates, top_k=req.top_k, token_budget=req.token_budget, cost=lambda c: c.tokens)
        ranked = {c.cube.id: rank for rank, c in enumerate(chosen, start=1)}
        ordered = edge_order(chosen)
        kind = classify(req.query)
        results = [self._result(c, ranked[c.cube.id], preset, kind.value, paths, req.explain) for c in ordered]
        if record:
            self._log(tenant, req, chosen, preset, actor)
        return SearchResult(results=results, context="\n".join(c.line for c in ordered))

    def _load(self, tenant: str, flt: VectorFilter, fused: Sequence[Fused]) -> list[_Candidate]:
        by_id = {c.id: c for c in self.records.get_memories(tenant, [f.id for f in fused])}
        out: list[_Candidate] = []
        for f in fused:
            cube = by_id.get(f.id)
            # Indexes are derived state (and the graph has no filters): re-check the source of truth.
            if cube is None or not matches(cube, flt):
                continue
            line = render(cube)
            out.append(_Candidate(cube, f, line, count_tokens(line)))
        return out

    @staticmethod
    def _result(
        c: _Candidate, rank: int, preset: RetrievalPreset, kind: str,
        paths: dict[str, list[str]], explain: bool,
    ) -> dict[str, Any]:
        body = c.cube.public()
        body["score"] = round(c.fused.score, 6)
        body["rank"] = rank
        if explain:
            why: dict[str, Any] = {
                "preset": preset.name,
                "query_kind": kind,
                "retrievers": {
                    name: {"rank": r, "score": round(c.fused.scores[name], 6)} for name, r in c.fused.ranks.items()
                },
                "tokens": c.tokens,
            }
            if c.cube.id in paths:
                why["graph_path"] = paths[c.cube.id]
            body["why"] = why
        return body

    def _log(
        self, tenant: str, req: SearchRequest, chosen: list[_Candidate], preset: RetrievalPreset, actor: str | None
    ) -> None:
        ids = [c.cube.id for c in chosen]
        if ids:
            self.records.record_access(tenant, ids, utcnow())
        with self.records.unit_of_work() as uow:
            uow.log([EventLog(
                tenant=tenant, user_id=req.user_id, kind="recall", actor=actor,
                payload={"query": req.query, "preset": preset.name, "returned": ids},
            )])
