"""The read pipeline: plan, gather candidates, fuse, pack, explain."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from memsvc.config import Limits, SearchConfig
from memsvc.errors import InvalidInput
from memsvc.gating import GateFallbacks
from memsvc.learn.features import (
    RERANK_FEATURES,
    ROUTES,
    Candidate,
    memory_text,
    per_length,
    rerank_base,
    route_features,
    with_second,
)
from memsvc.learn.second import SecondRows
from memsvc.models import (
    DIGEST_KEY,
    SPEAKER_KEY,
    EventLog,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    as_utc,
    utcnow,
)
from memsvc.ports import Embedder, GateModel, RecordStore, VectorFilter, VectorIndex
from memsvc.recall_log import RecallLog
from memsvc.retrieval.filters import matches
from memsvc.retrieval.fusion import Fused, rrf
from memsvc.retrieval.packing import count_tokens, edge_order, pack
from memsvc.retrieval.presets import PRESETS, RetrievalPreset
from memsvc.retrieval.query import classify
from memsvc.retrieval.structure import episode_of, episode_ranking, neighbour_ranking, time_window, turn_of
from memsvc.schemas import SearchRequest, SearchResult

# Fused candidates read from SQL beyond `top_k` in a search's first chunk: most are packed at once;
# the rest cover candidates the filter re-check, the budget or the restatement check passes over.
LOAD_SLACK = 10


@dataclass(frozen=True)
class GraphHit:
    memory_id: str
    score: float
    path: list[str]  # query entity -> ... -> entity the memory mentions


NEIGHBOUR_SEEDS = 5  # episodic hits whose neighbours `expand_neighbours` adds
EPISODE_TURNS = 5  # turns per episode that two-level recall ranks

# (tenant, user_id, query, dense seed ids, filter, limit) -> ranked graph hits
GraphRetriever = Callable[[str, str, str, list[str], VectorFilter, int], list[GraphHit]]
# (tenant, user_id, entity names) -> ids of memories that mention one of them
EntityResolver = Callable[[str, str, list[str]], list[str]]


_ADAPTED = RERANK_FEATURES.index("adapted")  # the read gate's column of the adapted query's cosine
_SECOND = RERANK_FEATURES.index("second")  # its column of the second embedder's cosine


@dataclass(frozen=True)
class _Candidate:
    cube: MemoryCube
    fused: Fused
    line: str
    tokens: int
    fused_rank: int = 0
    rerank: float | None = None  # the read gate's score, when it ran
    per_token: float | None = None  # its order: log expected evidence per token (`per_length`)
    adapted: float | None = None  # cosine to the query as the read gate's query adapter moved it
    second: float | None = None  # cosine to the query in the second embedder's space (e5)
    cross: float | None = None  # the cross-encoder stage's logit, when it ran on this candidate

    @property
    def score(self) -> float:
        """What a result reports as its `score`, monotone in the order results are shown in."""
        return _sigmoid(self.per_token) if self.per_token is not None else self.fused.score


@dataclass(frozen=True)
class _Retrieved:
    """The retrievers' fused ranking before anything is loaded from SQL."""

    preset: RetrievalPreset
    flt: VectorFilter
    fused: list[Fused]
    paths: dict[str, list[str]]
    rerank: bool
    qvec: list[float] | None
    window: bool = False  # the query named a period and the `temporal` ranking ran
    second_query: Future[np.ndarray] | None = None  # the query's e5 row, embedded beside the retrievers (no projection)


@dataclass
class CandidateSet:
    """The read path up to (not including) packing: what a reranker sees, and what training dumps."""

    preset: RetrievalPreset
    candidates: list[_Candidate]
    features: np.ndarray | None = None  # one row per candidate when a reranker is to run
    paths: dict[str, list[str]] | None = None
    route: dict[str, float] | None = None  # the router's P(retriever ranks the evidence high), when loaded
    unranked: str | None = None  # why a loaded read gate did not order this pool (`why.rerank.skipped`)
    adapted: bool = False  # the features hold the candidates' cosines to the adapted query
    second: list[bool] | None = None  # per candidate: the features hold its second-embedder cosine
    query: str = ""  # what the cross-encoder stage reads beside each candidate
    uncrossed: str | None = None  # why a `*_cross` preset's second stage did not run (`why.rerank.cross_skipped`)


def restated(item: _Candidate, chosen: Sequence[_Candidate]) -> bool:
    """A derived memory whose every source turn is already chosen verbatim adds no evidence."""
    if item.cube.type is MemoryType.EPISODIC or not item.cube.source_ids:
        return False
    turns = {s for c in chosen if c.cube.type is MemoryType.EPISODIC for s in c.cube.source_ids}
    return all(s in turns for s in item.cube.source_ids)


def render(cube: MemoryCube) -> str:
    """One line of reader context: the date the memory is about, then its content."""
    when = as_utc(cube.event_time or cube.valid_from)
    return f"[{when:%Y-%m-%d}] {cube.content}" if when else cube.content


class ReadPipeline:
    def __init__(
        self, records: RecordStore, vectors: VectorIndex, embedder: Embedder,
        config: SearchConfig, limits: Limits,
        graph_retriever: GraphRetriever | None = None, entity_resolver: EntityResolver | None = None,
        gate: GateModel | None = None, recall_log: RecallLog | None = None, fallbacks: GateFallbacks | None = None,
        second: SecondRows | None = None,
    ) -> None:
        self.records = records
        self.second = second  # the second embedder's rows of the candidates' texts (None: read as unknown)
        self.fallbacks = fallbacks or GateFallbacks()  # a gate worker out of reach: the heuristic twins run
        self.recall_log = recall_log or RecallLog(records)
        self.vectors = vectors
        self.embedder = embedder
        self.config = config
        self.limits = limits
        self.graph_retriever = graph_retriever
        self.entity_resolver = entity_resolver
        self.gate_model = gate
        self.preset(config.preset)  # an unknown default preset fails at start-up, not per search

    # The gate model's heads, each None while the model does not serve it: asked at every use, since a
    # remote gate worker out of reach at start-up serves its heads once it answers.
    def _head(self, name: str) -> GateModel | None:
        gate = self.gate_model
        return gate if gate is not None and gate.has(name) else None

    @property
    def gate(self) -> GateModel | None:
        return self._head("rerank")

    @property
    def router(self) -> GateModel | None:
        return self._head("route")

    @property
    def crosser(self) -> GateModel | None:
        """The cross-encoder stage (None: the `*_cross` presets serve the read gate's order)."""
        return self._head("cross")

    @property
    def adapter(self) -> GateModel | None:
        return self._head("query")

    @property
    def projector(self) -> GateModel | None:
        """The read gate's projection of the query into the second embedder's space (None: the query
        is embedded with e5)."""
        return self._head("second")

    def preset(self, name: str | None) -> RetrievalPreset:
        name = name or self.config.preset
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
            statuses=[MemoryStatus.ACTIVE, *([MemoryStatus.SUPERSEDED] if as_of is not None else []),
                      *([MemoryStatus.ARCHIVED] if req.include_archived else [])],
            agent_id=f.agent_id if f else None,
            session_id=f.session_id if f else None,
            valid_at=as_of,
            event_from=as_utc(req.time_range.start) if req.time_range else None,
            event_to=as_utc(req.time_range.end) if req.time_range else None,
            metadata=f.metadata if f and f.metadata else None,
            ids=ids,
        )

    def search(self, tenant: str, req: SearchRequest, *, actor: str | None = None, record: bool = True) -> SearchResult:
        found = self._retrieve(tenant, req)
        if found is None:
            return SearchResult(results=[], context="")
        if found.rerank:  # the read gate scores the whole pool: load it all
            cset = self._complete(tenant, req, found)
            ranked_candidates: Iterable[_Candidate] = self.rank(cset)
        else:  # fused order: load from SQL only as far as packing reads
            cset = CandidateSet(found.preset, [], paths=found.paths)
            ranked_candidates = self._stream(tenant, found.flt, found.fused, first=req.top_k + LOAD_SLACK)
        chosen = pack(ranked_candidates, top_k=req.top_k, token_budget=req.token_budget, cost=lambda c: c.tokens,
                      redundant=restated)
        ranked = {c.cube.id: rank for rank, c in enumerate(chosen, start=1)}
        ordered = edge_order(chosen)
        kind = classify(req.query)
        results = [self._result(c, ranked[c.cube.id], cset, kind.value, req.explain) for c in ordered]
        if record:
            self._log(tenant, req, chosen, cset.preset, actor)
        return SearchResult(results=results, context="\n".join(c.line for c in ordered))

    def candidates(self, tenant: str, req: SearchRequest, *, features: bool = False) -> CandidateSet | None:
        """Every retriever of the preset, fused, loaded from the source of truth; with the read gate's
        features when the preset reranks and a gate is loaded, or when `features` asks (training
        dumps). None when a filter matches nothing."""
        found = self._retrieve(tenant, req, features=features)
        return None if found is None else self._complete(tenant, req, found)

    def _retrieve(self, tenant: str, req: SearchRequest, *, features: bool = False) -> _Retrieved | None:
        """Every retriever of the preset, fused (ids and scores only); None when a filter matches nothing."""
        if len(req.query) > self.limits.max_query_chars:
            raise InvalidInput(f"query longer than {self.limits.max_query_chars} characters")
        if req.top_k > self.limits.max_top_k:
            raise InvalidInput(f"top_k must be at most {self.limits.max_top_k}")
        preset = self.preset(req.preset)
        flt = self.filter_for(tenant, req)
        if flt is None:
            return None
        n = max(self.config.candidates, req.top_k * 2)
        rankings: dict[str, list[tuple[str, float]]] = {}
        dense: list[tuple[str, float]] = []
        qvec: list[float] | None = None
        searched: list[float] = []  # what the dense searches ask with: qvec, or qvec adapted (`adapt_query`)
        rerank = (preset.rerank and self.gate is not None) or features
        # The query's e5 row: projected from its MiniLM embedding when the artefact has the projection,
        # else embedded with e5 on a thread of its own while the retrievers run.
        second_query = (self.second.query_soon(req.query) if rerank and self.gate is not None and self.second
                        and self.projector is None else None)
        if "dense" in preset.retrievers or "graph" in preset.retrievers or rerank or preset.episodes or preset.temporal:
            qvec = self.embedder.embed_query(req.query).tolist()
            searched = qvec
            if preset.adapt_query and self.adapter is not None:
                moved = self._adapt(qvec)
                searched = moved.tolist() if moved is not None else qvec  # no adapter to be had: the query as asked
            dense = self.vectors.search(searched, flt, n)
            if "dense" in preset.retrievers:
                rankings["dense"] = dense
        if "keyword" in preset.retrievers:
            rankings["keyword"] = self.vectors.search_text(req.query, flt, n)
        paths: dict[str, list[str]] = {}
        if "graph" in preset.retrievers and self.graph_retriever is not None:
            hits = self.graph_retriever(tenant, req.user_id, req.query, [i for i, _ in dense], flt, n)
            rankings["graph"] = [(h.memory_id, h.score) for h in hits]
            paths = {h.memory_id: h.path for h in hits}
        if preset.episodes and qvec is not None:
            rankings["episodes"] = self._episodes(tenant, req, flt, qvec, preset.episodes)
        window = None
        if preset.temporal and qvec is not None and flt.event_from is None and flt.event_to is None:
            window = self._window(tenant, req)
            if window is not None:
                rankings["temporal"] = self.vectors.search(searched, replace(flt, event_from=window[0], event_to=window[1]), n)
        k = self.config.rrf_k if preset.rrf_k is None else preset.rrf_k
        fused = rrf(rankings, k=k, weights=preset.weights, tie_tolerance=preset.tie_tolerance)
        if preset.expand_neighbours and fused:
            rankings["neighbours"] = self._neighbours(tenant, req.user_id, fused, preset.expand_neighbours)
            fused = rrf(rankings, k=k, weights=preset.weights, tie_tolerance=preset.tie_tolerance)
        depth = max(self.config.rerank_depth if rerank else n, req.top_k)
        return _Retrieved(preset, flt, fused[:depth], paths, rerank, qvec, window=window is not None,
                          second_query=second_query)

    def _complete(self, tenant: str, req: SearchRequest, found: _Retrieved) -> CandidateSet:
        """The whole fused pool loaded, with the read gate's features and the router's view when due."""
        preset, flt, qvec = found.preset, found.flt, found.qvec
        candidates = self._load(tenant, flt, found.fused)
        cset = CandidateSet(preset, candidates, paths=found.paths, query=req.query)
        if found.rerank and candidates and qvec is not None:
            moved = self._adapt(qvec) if self.gate is not None else None
            # what needs no e5 first (the id-restricted searches, every column but the second
            # embedder's): the query's e5 row (`_second`) may still be on its way
            base = self._base(req.query, candidates, self._cosines(qvec, flt, candidates, moved), window=found.window)
            seconds = self._second(tenant, req, candidates, qvec, found.second_query) if self.gate is not None else {}
            cset.features = self._with_second(base, candidates, seconds)
            cset.adapted = moved is not None
            cset.second = [c.cube.id in seconds for c in candidates]
            router = self.router
            if router is not None:
                p = self.fallbacks.call("route", lambda: router.route(np.asarray([qvec], dtype=np.float32),
                                                                      route_features(req.query)[None]))
                if p is not None:
                    cset.route = {name: round(float(x), 4) for name, x in zip(ROUTES, p[0], strict=True)}
        return cset

    def _episodes(self, tenant: str, req: SearchRequest, flt: VectorFilter, qvec: list[float], m: int) -> list[tuple[str, float]]:
        """Two-level recall: the digests nearest the query pick the episodes, whose turns form the ranking."""
        digests = replace(flt, types=None, metadata={**(flt.metadata or {}), DIGEST_KEY: True})
        top = rrf({"dense": self.vectors.search(qvec, digests, 4 * m),
                   "keyword": self.vectors.search_text(req.query, digests, 4 * m)}, k=self.config.rrf_k)
        episodes: list[int] = []
        for cube in self._in_order(tenant, [f.id for f in top]):
            e = episode_of(cube)
            if e is not None and e not in episodes:
                episodes.append(e)
            if len(episodes) == m:
                break
        turns = self.records.episode_turns(tenant, req.user_id, episodes)
        if not turns:
            return []
        scores = dict(self.vectors.search(qvec, replace(flt, ids=[c.id for c in turns]), len(turns)))
        return episode_ranking(episodes, turns, scores, EPISODE_TURNS)

    def _neighbours(self, tenant: str, user_id: str, fused: Sequence[Fused], k: int) -> list[tuple[str, float]]:
        """The turns around the strongest episodic hits (the first `NEIGHBOUR_SEEDS` of the fusion)."""
        seeds = [c for c in self._in_order(tenant, [f.id for f in fused[:2 * NEIGHBOUR_SEEDS]])
                 if c.type is MemoryType.EPISODIC and turn_of(c) is not None][:NEIGHBOUR_SEEDS]
        turns: list[MemoryCube] = []
        for seed in seeds:
            at = turn_of(seed)
            assert at is not None
            turns += self.records.adjacent_turns(tenant, user_id, at, k)
        return neighbour_ranking(seeds, turns, k)

    def _window(self, tenant: str, req: SearchRequest) -> tuple[datetime, datetime] | None:
        """The period a query names ("last June", "in May 2023"), read against the scope's latest
        message date; None when it names none."""
        state = self.records.episode_state(tenant, req.user_id)
        anchor = as_utc(state.last_time) if state is not None and state.last_time is not None else utcnow()
        assert anchor is not None
        return time_window(req.query, anchor)

    def _in_order(self, tenant: str, ids: Sequence[str]) -> list[MemoryCube]:
        by_id = {c.id: c for c in self.records.get_memories(tenant, ids)}
        return [by_id[i] for i in ids if i in by_id]

    def _adapt(self, qvec: list[float]) -> np.ndarray | None:
        """The query as the query adapter moves it; None when the gate model cannot answer."""
        adapter = self.adapter
        if adapter is None:
            return None
        moved = self.fallbacks.call("query", lambda: adapter.adapt(np.asarray([qvec], dtype=np.float32)))
        return None if moved is None else moved[0]

    def _second(self, tenant: str, req: SearchRequest, cands: list[_Candidate], qvec: Sequence[float],
                query: Future[np.ndarray] | None = None) -> dict[str, tuple[float, np.ndarray]]:
        """Each candidate's cosine to the query in the second embedder's space and its row there (the
        context columns read it), by memory id: the rows stored for the candidates' texts, at most
        `second_fill` missing ones embedded now (and stored); the others are left out (the read gate
        reads them as unknown). The query's row: `query` when it is being embedded already, else `qvec`
        (its MiniLM embedding) as the gate's projection moves it, else (no projection, or a gate worker
        out of reach) embedded with e5 now."""
        if self.second is None or not cands:
            return {}
        rows = self.second.rows(tenant, req.user_id, [c.cube.content for c in cands], fill=self.config.second_fill)
        if not rows:
            return {}
        q = query.result() if query is not None else self._project(qvec)
        if q is None:
            q = self.second.query(req.query)
        return {c.cube.id: (float(rows[c.cube.content] @ q), rows[c.cube.content]) for c in cands
                if c.cube.content in rows}

    def _project(self, qvec: Sequence[float]) -> np.ndarray | None:
        """The query's row in the second embedder's space by the gate's projection; None without one."""
        projector = self.projector
        if projector is None:
            return None
        moved = self.fallbacks.call("second", lambda: projector.project(np.asarray([qvec], dtype=np.float32)))
        return None if moved is None else moved[0]

    def _cosines(self, qvec: list[float], flt: VectorFilter, cands: list[_Candidate],
                 moved: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """Every candidate's dense score, from one id-restricted search, and its cosine to `moved` (the
        query as the query adapter moves it, `_adapt`) from a second (empty without it: the read gate
        then reads the adapter's columns as unknown)."""
        ids = [c.cube.id for c in cands]
        only = replace(flt, ids=ids)
        cosine = dict(self.vectors.search(qvec, only, len(ids)))
        adapted = dict(self.vectors.search(moved.tolist(), only, len(ids))) if moved is not None else {}
        return cosine, adapted

    def _features(self, query: str, cands: list[_Candidate], cosines: tuple[dict[str, float], dict[str, float]], *,
                  window: bool = False, seconds: dict[str, tuple[float, np.ndarray]] | None = None) -> np.ndarray:
        """The read gate's inputs. `cosines`: the candidates' dense scores and their cosines to the
        adapted query (`_cosines`). `seconds`: the candidates' cosines and rows in the second embedder's
        space (`_second`), unknown where absent. The search computes it in two steps (`_base`, then
        `_with_second` once the query's e5 row is there); the same rows."""
        return self._with_second(self._base(query, cands, cosines, window=window), cands, seconds or {})

    def _base(self, query: str, cands: list[_Candidate], cosines: tuple[dict[str, float], dict[str, float]], *,
              window: bool = False) -> np.ndarray:
        """`_features` but for the columns that read the second embedder (`rerank_base`)."""
        cosine, adapted = cosines
        views = []
        for c in cands:
            r, sc = c.fused.ranks, c.fused.scores
            views.append(Candidate(
                type=c.cube.type.value, content=c.cube.content, speaker=_speaker(c.cube),
                derived=c.cube.type is not MemoryType.EPISODIC, tokens=c.tokens, event_epoch=_epoch(c.cube),
                dense=cosine.get(c.cube.id, sc.get("dense")), keyword=sc.get("keyword"), graph=sc.get("graph"),
                dense_rank=r.get("dense"), keyword_rank=r.get("keyword"), graph_rank=r.get("graph"),
                fused=c.fused.score, fused_rank=c.fused_rank, temporal_rank=r.get("temporal"),
                adapted=adapted.get(c.cube.id),
                turn=turn_of(c.cube) if c.cube.type is MemoryType.EPISODIC else None, session=c.cube.session_id,
                sources=tuple(c.cube.source_ids),
            ))
        return rerank_base(query, views, window=window)

    @staticmethod
    def _with_second(base: np.ndarray, cands: list[_Candidate], seconds: dict[str, tuple[float, np.ndarray]]) -> np.ndarray:
        """`base` (`_base`) with the second embedder's columns: `seconds` as `_features` reads it."""
        e5 = [seconds.get(c.cube.id) for c in cands]
        return with_second(base, [x[0] if x is not None else None for x in e5],
                           [x[1] if x is not None else None for x in e5], [_epoch(c.cube) for c in cands])

    def rank(self, cset: CandidateSet) -> list[_Candidate]:
        """Best first: the read gate's order when it ran, else the fused order."""
        gate, features = self.gate, cset.features
        if features is None or gate is None:
            return cset.candidates
        lists = self.fallbacks.call("rerank", lambda: gate.rerank([features]))
        if lists is None:
            cset.unranked = "gate model unavailable: fused order"
            return cset.candidates
        scores = lists[0]
        keys = per_length(scores, [c.tokens for c in cset.candidates])
        cosines = features[:, _ADAPTED] if cset.adapted else [None] * len(scores)
        second = [float(x) if known else None for x, known in
                  zip(features[:, _SECOND], cset.second or [False] * len(scores), strict=True)]
        scored = [replace(c, rerank=_sigmoid(float(s)), per_token=float(k), adapted=None if a is None else float(a),
                          second=e)
                  for c, s, k, a, e in zip(cset.candidates, scores, keys, cosines, second, strict=True)]
        logits = {c.cube.id: float(s) for c, s in zip(cset.candidates, scores, strict=True)}
        ranked = sorted(scored, key=lambda c: (-c.score, c.fused_rank))
        return self._cross(cset, ranked, logits) if cset.preset.cross else ranked

    def _cross(self, cset: CandidateSet, ranked: list[_Candidate], logits: dict[str, float]) -> list[_Candidate]:
        """The cross-encoder stage: the read gate's top `cross_depth` re-sorted by the sum of both
        models' logits per token (`per_length`), the rest after them in the read gate's order. Each
        re-sorted candidate takes the per-token key (and so the score) of the place it moves into, so
        results' scores stay monotone in their order."""
        model = self.crosser
        if model is None:
            cset.uncrossed = "no cross-encoder loaded: the read gate's order"
            return ranked
        top, rest = ranked[:self.config.cross_depth], ranked[self.config.cross_depth:]
        ce = self.fallbacks.call("cross", lambda: model.cross(cset.query, [memory_text(c.cube) for c in top]))
        if ce is None:
            cset.uncrossed = "gate model unavailable: the read gate's order"
            return ranked
        both = np.asarray([logits[c.cube.id] for c in top], dtype=np.float64) + np.asarray(ce, dtype=np.float64)
        keys = per_length(both, [c.tokens for c in top])
        order = sorted(range(len(top)), key=lambda j: (-float(keys[j]), top[j].fused_rank))
        # the places' per-token keys, best first, handed to the re-sorted candidates in their new order
        places = sorted((c.per_token for c in top if c.per_token is not None), reverse=True)
        crossed = [replace(top[j], cross=float(ce[j]), per_token=places[n] if n < len(places) else top[j].per_token)
                   for n, j in enumerate(order)]
        return crossed + rest

    def _stream(self, tenant: str, flt: VectorFilter, fused: Sequence[Fused], *, first: int) -> Iterator[_Candidate]:
        """The fused pool in order, loaded from SQL a chunk at a time (`first` ids, then twice as many
        each time): packing stops at `top_k`, so a search reads about `top_k` rows instead of the
        whole pool. Yields exactly what `_load` of the whole pool would hold, in the same order."""
        start, size = 0, max(1, first)
        while start < len(fused):
            yield from self._load(tenant, flt, fused[start:start + size], offset=start)
            start, size = start + size, size * 2

    def _load(self, tenant: str, flt: VectorFilter, fused: Sequence[Fused], *, offset: int = 0) -> list[_Candidate]:
        by_id = {c.id: c for c in self.records.get_memories(tenant, [f.id for f in fused])}
        out: list[_Candidate] = []
        for position, f in enumerate(fused, start=offset + 1):
            cube = by_id.get(f.id)
            # Indexes are derived state (and the graph has no filters): re-check the source of truth.
            if cube is None or not matches(cube, flt):
                continue
            line = render(cube)
            out.append(_Candidate(cube, f, line, count_tokens(line), fused_rank=position))
        return out

    @staticmethod
    def _result(c: _Candidate, rank: int, cset: CandidateSet, kind: str, explain: bool) -> dict[str, Any]:
        body = c.cube.public()
        body["score"] = round(c.score, 6)
        body["rank"] = rank
        if explain:
            why: dict[str, Any] = {
                "preset": cset.preset.name,
                "query_kind": kind,
                "retrievers": {
                    name: {"rank": r, "score": round(c.fused.scores[name], 6)} for name, r in c.fused.ranks.items()
                },
                "fused": {"rank": c.fused_rank, "score": round(c.fused.score, 6)},
                "tokens": c.tokens,
            }
            if cset.preset.rerank:
                why["rerank"] = (
                    {"score": round(c.rerank, 6), "per_token": round(c.per_token or 0.0, 6)}
                    | ({"query_cosine": round(c.adapted, 6)} if c.adapted is not None else {})
                    | ({"second_cosine": round(c.second, 6)} if c.second is not None else {})
                    | ({"cross": round(c.cross, 6)} if c.cross is not None else {})
                    | ({"cross_skipped": cset.uncrossed} if cset.uncrossed is not None else {}) if c.rerank is not None
                    else {"skipped": cset.unranked or "no read gate loaded: fused order"}
                )
            if cset.route is not None:
                why["router"] = cset.route
            if cset.paths and c.cube.id in cset.paths:
                why["graph_path"] = cset.paths[c.cube.id]
            body["why"] = why
        return body

    def _log(
        self, tenant: str, req: SearchRequest, chosen: list[_Candidate], preset: RetrievalPreset, actor: str | None
    ) -> None:
        ids = [c.cube.id for c in chosen]
        event = EventLog(tenant=tenant, user_id=req.user_id, kind="recall", actor=actor,
                         payload={"query": req.query, "preset": preset.name, "returned": ids})
        self.recall_log.add(event, ids, utcnow())


def _speaker(cube: MemoryCube) -> str | None:
    value = cube.metadata.get(SPEAKER_KEY)
    if isinstance(value, str):
        return value
    head, sep, _ = cube.content.partition(": ")
    return head if sep and len(head) <= 40 else None


def _epoch(cube: MemoryCube) -> float | None:
    """A memory's event time (its validity start where it has none) as the read gate reads it."""
    when = as_utc(cube.event_time or cube.valid_from)
    return when.timestamp() if when else None


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))
