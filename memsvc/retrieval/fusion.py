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
) -> list[Fused]:
    """Weighted reciprocal-rank fusion: score(d) = sum_r w_r / (k + rank_r(d)).

    Ties are broken by the number of retrievers that found the item, then by id,
    so the result is deterministic.
    """
    acc: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 0.0)
        if weight <= 0.0:
            continue
        seen: set[str] = set()
        position = 0
        for item_id, item_score in ranking:
            if item_id in seen:
                continue
            seen.add(item_id)
            position += 1
            acc[item_id] = acc.get(item_id, 0.0) + weight / (k + position)
            ranks.setdefault(item_id, {})[name] = position
            scores.setdefault(item_id, {})[name] = float(item_score)
    ordered = sorted(acc, key=lambda i: (-acc[i], -len(ranks[i]), i))
    return [Fused(i, acc[i], ranks[i], scores[i]) for i in ordered]
