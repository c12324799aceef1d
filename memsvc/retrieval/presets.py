"""Named retrieval recipes: which retrievers run and how their rankings are weighted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalPreset:
    name: str
    weights: dict[str, float] = field(default_factory=dict)  # retriever -> RRF weight
    rrf_k: int = 60
    expand_neighbours: int = 0  # temporal neighbours added around strong episodic hits

    @property
    def retrievers(self) -> tuple[str, ...]:
        return tuple(n for n, w in self.weights.items() if w > 0)


DENSE = RetrievalPreset("dense", {"dense": 1.0})
KEYWORD = RetrievalPreset("keyword", {"keyword": 1.0})
# Keyword ranks count half: on a user's own scope BM25 often matches only names that occur
# everywhere, and an equal vote lets that noise outrank a clear dense match.
HYBRID = RetrievalPreset("hybrid", {"dense": 1.0, "keyword": 0.5})
HYBRID_PPR = RetrievalPreset("hybrid_ppr", {"dense": 1.0, "keyword": 0.5, "graph": 0.5})

PRESETS: dict[str, RetrievalPreset] = {p.name: p for p in (DENSE, KEYWORD, HYBRID, HYBRID_PPR)}
DEFAULT_PRESET = HYBRID
