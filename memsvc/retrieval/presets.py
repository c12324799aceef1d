"""Named retrieval recipes: which retrievers run and how their rankings are weighted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalPreset:
    name: str
    weights: dict[str, float] = field(default_factory=dict)  # retriever -> RRF weight
    rrf_k: int | None = None  # None: the `MEMSVC_SEARCH__RRF_K` setting
    tie_tolerance: dict[str, float] = field(default_factory=lambda: {"keyword": 0.05})
    expand_neighbours: int = 0  # turns either side of the strongest episodic hits, as the `neighbours` ranking
    episodes: int = 0  # two-level recall: the turns of this many best digests' episodes, as the `episodes` ranking
    temporal: bool = False  # a query naming a period adds the memories dated in it, as the `temporal` ranking
    rerank: bool = False  # the learned read gate reorders the fused candidates (fused order without one)
    # The dense and temporal rankings search with the query as the read gate's query adapter moves it
    # (the plain query without an adapter). Not with `rerank`: the reranker learns from the candidates
    # of plain-query searches.
    adapt_query: bool = False
    # The cross-encoder stage (`memsvc train cross`) re-sorts the read gate's top `SearchConfig.cross_depth`
    # by the sum of both models' logits, per token (the read gate's order without a cross artefact).
    cross: bool = False

    def __post_init__(self) -> None:
        if self.adapt_query and self.rerank:
            raise ValueError(f"preset {self.name}: adapt_query and rerank do not combine")
        if self.cross and not self.rerank:
            raise ValueError(f"preset {self.name}: cross re-sorts the read gate's order, so it needs rerank")

    @property
    def retrievers(self) -> tuple[str, ...]:
        return tuple(n for n, w in self.weights.items() if w > 0)


DENSE = RetrievalPreset("dense", {"dense": 1.0})
KEYWORD = RetrievalPreset("keyword", {"keyword": 1.0})
# Equal votes for dense and BM25 (measured better on LoCoMo than keyword at 0.5); BM25 scores
# within 5% of each other count as one rank (see `rrf`), which removes the noise of a keyword
# list that only matched a name present everywhere.
HYBRID = RetrievalPreset("hybrid", {"dense": 1.0, "keyword": 1.0})
# `hybrid` plus the graph's PPR ranking at a full vote. Measured against half a vote (dev samples,
# `benchmarks/multihop.py`, offline extractor): MuSiQue R@5 .638 vs .626, HotpotQA R@5 .830 vs .830,
# LoCoMo multi-hop recall@500 words .461 vs .447; damping .3/.5 and passage weight .5/1 moved
# nothing beyond noise, and 10 dense seeds instead of 5 was worse.
HYBRID_PPR = RetrievalPreset("hybrid_ppr", {"dense": 1.0, "keyword": 1.0, "graph": 1.0})

# The same candidates, reordered by the learned read gate (`memsvc train gates`) over the fused top
# `SearchConfig.rerank_depth`; see the README's gate-model section for what each measured.
HYBRID_RERANK = RetrievalPreset("hybrid_rerank", HYBRID.weights, rerank=True)
HYBRID_PPR_RERANK = RetrievalPreset("hybrid_ppr_rerank", HYBRID_PPR.weights, rerank=True)

# Recall that uses the structure (`memsvc.retrieval.structure`), each `hybrid` plus one ranking; the
# README's "Lifecycle" section has what each measured against `hybrid`.
HYBRID_EPISODES = RetrievalPreset("hybrid_episodes", {**HYBRID.weights, "episodes": 0.5}, episodes=3)
HYBRID_NEIGHBOURS = RetrievalPreset("hybrid_neighbours", {**HYBRID.weights, "neighbours": 0.5}, expand_neighbours=1)
HYBRID_TEMPORAL = RetrievalPreset("hybrid_temporal", {**HYBRID.weights, "temporal": 1.0}, temporal=True)
# Both time-based rankings (neighbours in the stream, the period a query names), without the episodes.
HYBRID_TIME = RetrievalPreset("hybrid_time", {**HYBRID.weights, "neighbours": 0.5, "temporal": 1.0},
                              expand_neighbours=1, temporal=True)
# `hybrid_temporal` (the default's candidates) reordered by the read gate, which is trained on this
# pool and sees whether the query named a period and each candidate's rank in the `temporal` ranking.
HYBRID_TEMPORAL_RERANK = RetrievalPreset("hybrid_temporal_rerank", HYBRID_TEMPORAL.weights, temporal=True, rerank=True)
# `hybrid_temporal_rerank` with the cross-encoder stage over the read gate's top: a query and a memory
# read together (~5 ms a pair on a CPU core, so for a GPU-hosted gate worker or a node with CPU to
# spare; README "Cross-encoder stage").
HYBRID_TEMPORAL_CROSS = RetrievalPreset("hybrid_temporal_cross", HYBRID_TEMPORAL.weights, temporal=True, rerank=True,
                                        cross=True)
# `hybrid_temporal` whose dense searches use the adapted query (`memsvc.learn.nets.QueryAdapter`).
HYBRID_TEMPORAL_ADAPTED = RetrievalPreset("hybrid_temporal_adapted", HYBRID_TEMPORAL.weights, temporal=True,
                                          adapt_query=True)
STRUCTURED = RetrievalPreset("structured", {**HYBRID.weights, "episodes": 0.5, "neighbours": 0.5, "temporal": 1.0},
                             episodes=3, expand_neighbours=1, temporal=True)

PRESETS: dict[str, RetrievalPreset] = {
    p.name: p for p in (DENSE, KEYWORD, HYBRID, HYBRID_PPR, HYBRID_RERANK, HYBRID_PPR_RERANK,
                        HYBRID_EPISODES, HYBRID_NEIGHBOURS, HYBRID_TEMPORAL, HYBRID_TEMPORAL_RERANK,
                        HYBRID_TEMPORAL_CROSS, HYBRID_TEMPORAL_ADAPTED, HYBRID_TIME, STRUCTURED)
}
# `hybrid` plus the period a query names: wins or ties `hybrid` on LoCoMo, REALTALK, TMD and
# KnowMe-Bench in WR@500, ER@10 and nDCG@10 (README "Lifecycle"), so it is the default.
DEFAULT_PRESET = HYBRID_TEMPORAL
