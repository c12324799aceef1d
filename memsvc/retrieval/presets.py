"""Named retrieval recipes: which retrievers run and how their rankings are weighted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalPreset:
    name: str
    weights: dict[str, float] = field(default_factory=dict)  # retriever -> RRF weight
    rrf_k: int = 60
    tie_tolerance: dict[str, float] = field(default_factory=lambda: {"keyword": 0.05})
    expand_neighbours: int = 0  # temporal neighbours added around strong episodic hits

    @property
    def retrievers(self) -> tuple[str, ...]:
        return tuple(n for n, w in self.weights.items() if w > 0)


DENSE = RetrievalPreset("dense", {"dense": 1.0})
KEYWORD = RetrievalPreset("keyword", {"keyword": 1.0})
# Equal votes for dense and BM25 (measured better on LoCoMo than keyword at 0.5); BM25 scores
# within 5% of each other count as one rank (see `rrf`), which removes the noise of a keyword
# list that only matched a name present everywhere.
HYBRID = RetrievalPreset("hybrid", {"dense": 1.0, "keyword": 1.0})
# `hybrid` plus the graph's PPR ranking at half a vote. The PPR ranking already carries the dense
# hits (they seed it), so a full vote would count dense twice (measured worse on LoCoMo multi-hop).
HYBRID_PPR = RetrievalPreset("hybrid_ppr", {"dense": 1.0, "keyword": 1.0, "graph": 0.5})

PRESETS: dict[str, RetrievalPreset] = {p.name: p for p in (DENSE, KEYWORD, HYBRID, HYBRID_PPR)}
DEFAULT_PRESET = HYBRID
