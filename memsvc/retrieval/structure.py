"""Retrievers that use the memory's structure (episodes, stream order, message dates); each returns
one ranking for the fusion, like dense and keyword do.

* `episode_ranking` (two-level recall, HCAM): the turns of the best-matching episodes, found
  through their digests, ordered by the episode's rank then the turn's own score.
* `neighbour_ranking` (temporal contiguity, EM-LLM): the turns right before and after the strongest
  episodic hits, nearest first.
* `time_window` (a temporal query narrowed by message dates): the period a query names ("last
  June", "in May 2023"), read against the scope's latest message, not the wall clock, since the
  stream may be history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from memsvc.models import EPISODE_KEY, TURN_KEY, MemoryCube
from memsvc.skills.when import TimeMention, time_mentions


def episode_of(cube: MemoryCube) -> int | None:
    value = cube.metadata.get(EPISODE_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def turn_of(cube: MemoryCube) -> int | None:
    value = cube.metadata.get(TURN_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def episode_ranking(
    episodes: Sequence[int], turns: Sequence[MemoryCube], scores: dict[str, float], per_episode: int,
) -> list[tuple[str, float]]:
    """The best `per_episode` turns of each of `episodes` by their score (`scores`, e.g. the cosine
    to the query; unscored turns last), ordered by that score, the better episode first on ties."""
    rank = {e: i for i, e in enumerate(episodes)}
    best: dict[int, list[MemoryCube]] = {}
    for c in sorted((c for c in turns if episode_of(c) in rank),
                    key=lambda c: (-scores.get(c.id, -1.0), turn_of(c) or 0)):
        group = best.setdefault(episode_of(c), [])  # type: ignore[arg-type]
        if len(group) < per_episode:
            group.append(c)
    order = sorted((c for group in best.values() for c in group),
                   key=lambda c: (-scores.get(c.id, -1.0), rank[episode_of(c)]))  # type: ignore[index]
    n = len(order)
    return [(c.id, float(n - i)) for i, c in enumerate(order)]


def neighbour_ranking(seeds: Sequence[MemoryCube], turns: Sequence[MemoryCube], k: int) -> list[tuple[str, float]]:
    """The turns within `k` positions of each seed (seeds themselves excluded), by seed rank, then
    distance (the earlier turn first on a tie)."""
    seed_ids = {s.id for s in seeds}
    by_turn = {t: c for c in turns if (t := turn_of(c)) is not None}
    out: list[str] = []
    for seed in seeds:
        at = turn_of(seed)
        if at is None:
            continue
        for d in range(1, k + 1):
            for pos in (at - d, at + d):
                c = by_turn.get(pos)
                if c is not None and c.id not in seed_ids and c.id not in out:
                    out.append(c.id)
    n = len(out)
    return [(i, float(n - r)) for r, i in enumerate(out)]


def _end(m: TimeMention) -> datetime:
    start = m.start
    if m.granularity == "day":
        return start + timedelta(days=1)
    if m.granularity == "weekend":
        return start + timedelta(days=2)
    if m.granularity == "week":
        return start + timedelta(days=7)
    if m.granularity == "month":
        total = start.year * 12 + start.month
        return start.replace(year=total // 12, month=total % 12 + 1, day=1)
    return start.replace(year=start.year + 1, month=1, day=1)


def time_window(query: str, anchor: datetime) -> tuple[datetime, datetime] | None:
    """[start, end) of the periods the query names, or None when it names none."""
    mentions = [m for m in time_mentions(query, anchor) if not m.label.startswith("about ")]
    if not mentions:
        return None
    return min(m.start for m in mentions), max(_end(m) for m in mentions)
