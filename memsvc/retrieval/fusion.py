"""Reciprocal-rank fusion of several rankings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fused:
    id: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)  # retriever -> 1-based rank
    scores: dict[str, float] = field(default_factory=dict)  # retriever -> its own score


def rrf(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    tie_tolerance: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Weighted reciprocal-rank fusion: score(d) = sum_r w_r / (k + rank_r(d)).

    `tie_tolerance[r]` = t makes retriever r's scores within a factor (1 - t) of a group's
    first score share that group's rank (competition ranking), so near-equal scores -- a
    BM25 list that only matched a name present everywhere, ordered by document length --
    carry no order into the fusion. Ties in the fused score are broken by the number of
    retrievers that found the item, then by id, so the result is deterministic.
    """
    acc: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 0.0)
        if weight <= 0.0:
            continue
        tol = 0.0 if tie_tolerance is None else tie_tolerance.get(name, 0.0)
        seen: set[str] = set()
        position = 0
        rank = 0
        leader = 0.0
        for item_id, item_score in ranking:
            if item_id in seen:
                continue
            seen.add(item_id)
            position += 1
            if rank == 0 or tol <= 0.0 or item_score < leader * (1.0 - tol) or leader <= 0.0:
                rank, leader = position, float(item_score)
            acc[item_id] = acc.get(item_id, 0.0) + weight / (k + rank)
            ranks.setdefault(item_id, {})[name] = rank
            scores.setdefault(item_id, {})[name] = float(item_score)
    ordered = sorted(acc, key=lambda i: (-acc[i], -len(ranks[i]), i))
    return [Fused(i, acc[i], ranks[i], scores[i]) for i in ordered]
