"""Labelled examples for the gate heads, collected through memsvc's real write and read paths.

Every training task (development data only; the HippoRAG samples are evaluation-only and never
collected) is written into a fresh in-process `MemoryOS` exactly as `memsvc eval` writes it; then
for every query and pool (`hybrid_temporal`, `hybrid_ppr`) the read path's own candidate stage is asked for
its fused top `rerank_depth` with the read gate's features (`ReadPipeline.candidates`). Each
candidate is labelled with the gold evidence it is credited with (`evals.runner.to_hits`: the
memory must state the source). Dialogue turns also give the write gate's examples: the turn's
embedding and signals, labelled 1 when any question of its conversation cites it.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evals.runner import RunOptions, SystemRun, scope_id, to_hits, write_task
from evals.tasks import Task
from memsvc.learn.features import route_features, write_features
from memsvc.models import MemoryType, Role
from memsvc.schemas import SearchRequest
from memsvc.write.pipeline import episodic_content
from memsvc.write.stages import heuristic_gate

# The default's candidates (`hybrid`, plus the `temporal` ranking when a query names a period; the
# same as `hybrid` otherwise) and the graph's. The temporal rank is a read-gate feature, so the head
# learns to keep what the named period brought up instead of undoing it.
POOLS = ("hybrid_temporal", "hybrid_ppr")
BASE_POOL, GRAPH_POOL = POOLS
RETRIEVERS = ("dense", "keyword", "graph")
TENANT = "train"
CACHE_VERSION = 4


@dataclass
class QueryExample:
    task: str
    scene: str
    query_id: str
    category: str
    text: str
    gold: tuple[str, ...]
    pool: str
    features: np.ndarray  # (n, f) read-gate features, fused order
    labels: np.ndarray  # (n,) candidate credited with gold evidence
    credited: list[tuple[str, ...]]
    words: list[int]
    episodic: list[bool]
    sources: list[tuple[str, ...]]
    ranks: np.ndarray  # (n, 3) rank of the candidate in each retriever's own list (0 = absent)
    query_embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    route_side: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    contents: list[str] = field(default_factory=list)  # each candidate's text, as a cross-encoder reads it
    dates: list[str] = field(default_factory=list)  # each candidate's event date (ISO day; "" when none)
    # the read gate's `SECOND_FEATURES` columns, filled at training from the candidates' texts
    # (`evals.train_gates.second_vectors`); None: not computed
    second: np.ndarray | None = None
    # the read gate's `NEIGHBOUR_FEATURES` columns, filled at training from the candidates' stream
    # positions (`evals.train_gates.fill_neighbours`); None: not computed
    neighbours: np.ndarray | None = None

    @property
    def group(self) -> str:
        return f"{self.task}/{self.scene}"


@dataclass
class TurnExamples:
    task: str
    groups: list[str]
    embeddings: np.ndarray
    side: np.ndarray
    labels: np.ndarray
    heuristic: np.ndarray


@dataclass
class TaskData:
    name: str
    files: list[Path]
    queries: list[QueryExample]
    turns: TurnExamples | None
    seconds: float = 0.0  # how long collecting took (kept in the cache, so a cached run still reports it)


def _day(cube: Any) -> str:
    when = cube.event_time or cube.valid_from
    return when.date().isoformat() if when is not None else ""


def collect_task(task: Task, os_: Any, *, progress: bool = True) -> TaskData:
    """Write `task` through `os_` (tenant `train`) and collect both heads' examples."""
    from evals.client import InProcessClient

    opts = RunOptions(run_id="gates", progress=progress)
    write_task(task, InProcessClient(os_, TENANT, owns=False), SystemRun("memsvc"), opts)
    docs = {scene: {d.id: d for d in ds} for scene, ds in task.scenes.items()}
    queries: list[QueryExample] = []
    for q in tqdm(task.queries, desc=f"{task.name} candidates", unit="q", disable=not progress, leave=False):
        qvec = os_.embedder.embed_query(q.text).astype(np.float32)
        for pool in POOLS:
            req = SearchRequest(user_id=scope_id(task.name, q.scene, opts.run_id), query=q.text[:4000],
                                top_k=100, preset=pool)
            cset = os_.reader.candidates(TENANT, req, features=True)
            cands = cset.candidates if cset is not None else []
            if not cands or cset is None or cset.features is None:
                continue
            results = [{"id": c.cube.id, "content": c.cube.content, "source_ids": c.cube.source_ids,
                        "type": c.cube.type.value} for c in cands]
            hits = to_hits(results, docs[q.scene])  # no scores: fused order kept
            gold = set(q.gold)
            queries.append(QueryExample(
                task=task.name, scene=q.scene, query_id=q.id, category=q.category, text=q.text, gold=q.gold,
                pool=pool, features=cset.features, labels=np.array([bool(set(h.credited) & gold) for h in hits]),
                credited=[h.credited for h in hits], words=[h.words for h in hits],
                episodic=[c.cube.type is MemoryType.EPISODIC for c in cands],
                sources=[tuple(c.cube.source_ids) for c in cands],
                ranks=np.array([[c.fused.ranks.get(r, 0) for r in RETRIEVERS] for c in cands], dtype=np.int32),
                query_embedding=qvec, route_side=route_features(q.text),
                contents=[c.cube.content for c in cands], dates=[_day(c.cube) for c in cands],
            ))
    turns = None
    if task.infer:  # conversations (streams of turns), not document corpora
        cited: dict[str, set[str]] = {}
        for q in task.queries:
            cited.setdefault(q.scene, set()).update(q.gold)
        rows = [(scene, d) for scene, ds in task.scenes.items() for d in ds]
        texts = [episodic_content(Role(d.role), d.speaker, d.content) for _, d in rows]
        emb = os_.embedder.embed(texts).astype(np.float32)
        turns = TurnExamples(
            task=task.name, groups=[f"{task.name}/{s}" for s, _ in rows], embeddings=emb,
            side=np.stack([write_features(d.role, d.content) for _, d in rows]),
            labels=np.array([d.id in cited.get(s, set()) for s, d in rows]),
            heuristic=np.array([heuristic_gate(Role(d.role), d.content).importance for _, d in rows]),
        )
    return TaskData(task.name, list(task.files), queries, turns)


def load_or_collect(task: Task, cache: Path, *, progress: bool = True) -> TaskData:
    """The task's examples from `cache` when collected before for the same selection, else collect them."""
    key = f"{task.name}-{len(task.scenes)}s-{len(task.queries)}q-v{CACHE_VERSION}.pkl"
    path = cache / key
    if path.exists():
        with path.open("rb") as fh:
            data: TaskData = pickle.load(fh)  # our own cache file, written below
        return data
    from evals.client import build_in_process
    from memsvc.config import NoGates

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="memsvc-gates-") as folder:
        client = build_in_process(folder, tenant=TENANT, gates=NoGates())
        try:
            data = collect_task(task, client._os, progress=progress)
        finally:
            client.close()
    data.seconds = round(time.time() - started, 1)
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh)
    return data

