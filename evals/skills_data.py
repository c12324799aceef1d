"""What every skill does on every span of the development conversations, and what recall it buys.

One collection serves the skill ablation, the controller's training and the designer: each
conversation task is written through memsvc's real write path with the `all` controller (every
skill on every gated span), the write log says which (span, skill) pairs ran and what each wrote,
and every question's fused candidates (the read path's own candidate stage, preset `hybrid`) are
kept with the gold evidence each candidate states. A selection of (span, skill) pairs is then
scored without rewriting: its derived memories stay in the candidate lists, the others leave, and
the read path's packing (`restated` dedup, top 100) gives recall within 500 words (WR@500) and
ER@10. Removing memories does not re-fuse the lists (RRF ranks are those of the full store): an
approximation the ablation table checks against real runs.

Costs: an executor's time per span (the write log's per-skill milliseconds over the spans it ran
on) plus, per memory it writes, the measured time to embed and graph-index one derived memory.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evals.runner import RunOptions, SystemRun, scope_id, score_hits, to_hits, write_task
from evals.tasks import Task
from memsvc.learn.features import write_features
from memsvc.models import MemoryType, Role
from memsvc.schemas import SearchRequest
from memsvc.skills.offline import episodic_content

TENANT = "skills"
CACHE_VERSION = 1
BUDGET_METRICS = ("WR@500", "ER@10", "WR@250", "WR@1000")


@dataclass(frozen=True)
class Derived:
    id: str
    skill: str
    scene: str
    span: str  # the message the skill was chosen for (the last source)
    sources: tuple[str, ...]
    words: int
    content: str


@dataclass
class Pair:
    """A (span, skill) pair the `all` controller ran."""

    scene: str
    span: str
    skill: str
    memories: list[str] = field(default_factory=list)
    ms: float = 0.0  # executor time share (the skill's time in its request over its spans)


@dataclass
class QueryCands:
    scene: str
    query_id: str
    category: str
    gold: tuple[str, ...]
    ids: list[str]  # fused order
    credited: list[tuple[str, ...]]
    words: list[int]
    episodic: list[bool]
    sources: list[tuple[str, ...]]


@dataclass
class SkillsData:
    task: str
    files: list[Path]
    main_categories: tuple[str, ...] | None
    spans: dict[tuple[str, str], int]  # (scene, message id) -> row of the span arrays
    span_emb: np.ndarray
    span_side: np.ndarray
    span_role: list[str]
    span_text: list[str]
    pairs: list[Pair]
    derived: dict[str, Derived]
    queries: list[QueryCands]
    memory_ms: float  # embedding + graph indexing of one derived memory
    write_seconds: float
    turns: int

    def pair_cost(self, pair: Pair) -> float:
        return pair.ms + self.memory_ms * len(pair.memories)


def _write_log(os_: Any, user: str) -> Iterable[dict[str, Any]]:
    cursor = None
    while True:
        page = os_.records.events(TENANT, user_id=user, kinds=["write"], limit=500, cursor=cursor)
        for event in page.items:
            yield event.payload
        cursor = page.next_cursor
        if cursor is None:
            return


def _memory_ms(os_: Any, cubes: Sequence[Any], n: int = 200) -> float:
    """Milliseconds to embed and graph-index one derived memory (a sample of this run's)."""
    sample = list(cubes)[:n]
    if not sample:
        return 0.0
    start = time.perf_counter()
    os_.indexer.embed(sample)
    if os_.indexer.graph_extractor is not None:
        os_.indexer.graph_extractor(sample)
    return (time.perf_counter() - start) * 1000 / len(sample)


def collect_task(task: Task, os_: Any, *, progress: bool = True) -> SkillsData:
    from evals.client import InProcessClient

    opts = RunOptions(run_id="skills", progress=progress)
    run = SystemRun("memsvc")
    write_task(task, InProcessClient(os_, TENANT, owns=False), run, opts)
    pairs: dict[tuple[str, str, str], Pair] = {}
    derived: dict[str, Derived] = {}
    cubes = []
    for scene in task.scenes:
        user = scope_id(task.name, scene, opts.run_id)
        for log in _write_log(os_, user):
            for span, skills in log.get("selected", {}).items():
                for skill in skills:
                    pairs.setdefault((scene, span, skill), Pair(scene, span, skill))
            for skill, stats in log.get("skills", {}).items():
                spans_of = [s for s, sk in log.get("selected", {}).items() if skill in sk]
                for s in spans_of:
                    if (scene, s, skill) in pairs:
                        pairs[(scene, s, skill)].ms += float(stats.get("ms", 0.0)) / max(1, len(spans_of))
        for cube in os_.records.iter_memories(TENANT, user):
            if cube.type is MemoryType.EPISODIC or cube.written_by is None:
                continue
            span = cube.source_ids[-1] if cube.source_ids else ""
            d = Derived(cube.id, cube.written_by, scene, span, tuple(cube.source_ids), len(cube.content.split()), cube.content)
            derived[cube.id] = d
            cubes.append(cube)
            pairs.setdefault((scene, span, d.skill), Pair(scene, span, d.skill)).memories.append(cube.id)
    docs = {scene: {d.id: d for d in ds} for scene, ds in task.scenes.items()}
    queries: list[QueryCands] = []
    for q in tqdm(task.queries, desc=f"{task.name} candidates", unit="q", disable=not progress, leave=False):
        req = SearchRequest(user_id=scope_id(task.name, q.scene, opts.run_id), query=q.text[:4000], top_k=100,
                            preset="hybrid")
        cset = os_.reader.candidates(TENANT, req)
        cands = cset.candidates if cset is not None else []
        results = [{"id": c.cube.id, "content": c.cube.content, "source_ids": c.cube.source_ids,
                    "type": c.cube.type.value} for c in cands]
        hits = to_hits(results, docs[q.scene])
        queries.append(QueryCands(
            q.scene, q.id, q.category, q.gold, [c.cube.id for c in cands], [h.credited for h in hits],
            [h.words for h in hits], [c.cube.type is MemoryType.EPISODIC for c in cands],
            [tuple(c.cube.source_ids) for c in cands]))
    rows = [(scene, d) for scene, ds in task.scenes.items() for d in ds]
    texts = [episodic_content(Role(d.role), d.speaker, d.content) for _, d in rows]
    emb = os_.embedder.embed(texts).astype(np.float32)
    return SkillsData(
        task=task.name, files=list(task.files), main_categories=task.main_categories,
        spans={(scene, d.id): i for i, (scene, d) in enumerate(rows)}, span_emb=emb,
        span_side=np.stack([write_features(d.role, d.content) for _, d in rows]),
        span_role=[d.role for _, d in rows], span_text=[d.content for _, d in rows],
        pairs=list(pairs.values()), derived=derived, queries=queries, memory_ms=_memory_ms(os_, cubes),
        write_seconds=run.write_seconds, turns=run.messages_written,
    )


def load_or_collect(task: Task, cache: Path, *, progress: bool = True, tag: str = "") -> SkillsData:
    """The task's collection from `cache` when made before for the same selection (and bank `tag`)."""
    key = f"{task.name}-{len(task.scenes)}s-{len(task.queries)}q{('-' + tag) if tag else ''}-v{CACHE_VERSION}.pkl"
    path = cache / key
    if path.exists():
        with path.open("rb") as fh:
            data: SkillsData = pickle.load(fh)  # our own cache file, written below
        return data
    from evals.client import build_in_process
    from memsvc.config import SkillsConfig

    with tempfile.TemporaryDirectory(prefix="memsvc-skills-") as folder:
        client = build_in_process(folder, tenant=TENANT, skills=SkillsConfig(controller="all"))
        try:
            data = collect_task(task, client._os, progress=progress)
        finally:
            client.close()
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh)
    return data


# -- scoring a selection ---------------------------------------------------------------------------


def pack(q: QueryCands, keep: set[str] | None, top_k: int = 100) -> list[int]:
    """Candidate indices the read path would return: episodic turns always, derived memories only
    when in `keep` (None: all), a derived memory whose sources are already chosen verbatim skipped."""
    chosen: list[int] = []
    turns: set[str] = set()
    for i, mid in enumerate(q.ids):
        if len(chosen) >= top_k:
            break
        if not q.episodic[i]:
            if keep is not None and mid not in keep:
                continue
            if q.sources[i] and all(s in turns for s in q.sources[i]):
                continue
        chosen.append(i)
        if q.episodic[i]:
            turns.update(q.sources[i])
    return chosen


def query_metrics(q: QueryCands, keep: set[str] | None) -> dict[str, float]:
    chosen = pack(q, keep)
    out = score_hits([q.credited[i] for i in chosen], [q.words[i] for i in chosen], q.gold, RunOptions())
    return {k: out[k] for k in BUDGET_METRICS}


def useful_memories(q: QueryCands, budget: int = 500) -> set[str]:
    """Derived memories that bring gold evidence into the first `budget` words of the all-skills packing."""
    used = 0
    out: set[str] = set()
    gold = set(q.gold)
    for i in pack(q, None):
        used += q.words[i]
        if used > budget:  # the walk of `evals.metrics.results_within_budget`
            break
        if not q.episodic[i] and set(q.credited[i]) & gold:
            out.add(q.ids[i])
    return out


def score_selection(data: Sequence[SkillsData], keep: set[str] | None, *, scenes: set[str] | None = None,
                    by_category: bool = False) -> dict[str, Any]:
    """Mean WR/ER over the headline categories (and per category) when only `keep` stays."""
    rows: list[tuple[str, dict[str, float]]] = []
    for d in data:
        for q in d.queries:
            if scenes is not None and f"{d.task}/{q.scene}" not in scenes:
                continue
            if d.main_categories is not None and q.category not in d.main_categories:
                continue
            rows.append((q.category, query_metrics(q, keep)))
    out: dict[str, Any] = {k: round(float(np.mean([m[k] for _, m in rows])), 4) if rows else 0.0 for k in BUDGET_METRICS}
    out["n"] = len(rows)
    if by_category:
        out["by_category"] = {
            c: {k: round(float(np.mean([m[k] for cc, m in rows if cc == c])), 4) for k in ("WR@500", "ER@10")}
            for c in sorted({c for c, _ in rows})}
    return out
