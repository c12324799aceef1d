"""LMEB-style retrieval tasks: documents per scene, queries, binary qrels; built from the loaders.

A *scene* is the set of candidate documents a query is ranked among (LMEB restricts each ranking to
its scene's candidates). Here every scene is written into its own memsvc user scope and every
baseline indexes each scene separately, which is that restriction, applied before retrieval rather
than after (identical for dense retrieval; for BM25 only the corpus statistics differ). Tasks without
a candidate restriction in LMEB have a single scene, `all`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from evals.datasets.base import Dataset

MEMORY_TYPES = ("dialogue", "episodic", "procedural", "semantic")


@dataclass(frozen=True)
class Doc:
    """A document as written to memory: one message (`id` = the message id = what qrels name)."""

    id: str
    content: str
    speaker: str | None = None
    role: str = "user"
    timestamp: datetime | None = None
    session: str | None = None


@dataclass(frozen=True)
class Query:
    id: str
    scene: str
    text: str
    category: str
    gold: tuple[str, ...]
    answer: str | None = None
    gold_labels: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Task:
    name: str
    memory_type: str
    scenes: dict[str, tuple[Doc, ...]]
    queries: tuple[Query, ...]
    main_categories: tuple[str, ...] | None = None  # None: every category counts in the headline
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    label_of: Callable[[str], str] | None = None  # doc id -> coarser label (LongMemEval session)
    label_name: str = "session"
    infer: bool = True  # default for memsvc writes: full pipeline for streams, verbatim for corpora
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_docs(self) -> int:
        return sum(len(docs) for docs in self.scenes.values())

    def select(self, limit: int | None = None, max_scenes: int | None = None) -> Task:
        """At most `max_scenes` scenes (file order) and `limit` queries, balanced over (scene, category)."""
        scene_ids = list(self.scenes)[:max_scenes] if max_scenes else list(self.scenes)
        queries = [q for q in self.queries if q.scene in set(scene_ids)]
        chosen = select_queries(queries, limit)
        used = {q.scene for q in chosen}
        notes = self.notes
        if limit is not None or max_scenes is not None:
            notes += (f"selection: {len(chosen)} of {len(self.queries)} queries, "
                      f"{len(used)} of {len(self.scenes)} scenes (limit={limit}, scenes={max_scenes})",)
        return replace(
            self, scenes={s: self.scenes[s] for s in scene_ids if s in used}, queries=tuple(chosen), notes=notes
        )


def select_queries(queries: list[Query], limit: int | None) -> list[Query]:
    """Round-robin over (scene, category) groups in order of first appearance, keeping file order."""
    if limit is None or limit >= len(queries):
        return list(queries)
    groups: dict[tuple[str, str], list[Query]] = defaultdict(list)
    for q in queries:
        groups[(q.scene, q.category)].append(q)
    picked: set[str] = set()
    lists = list(groups.values())
    depth = 0
    while len(picked) < limit:
        for group in lists:
            if depth < len(group) and len(picked) < limit:
                picked.add(group[depth].id)
        depth += 1
    return [q for q in queries if q.id in picked]


def _build_queries(dataset: Dataset, scenes: dict[str, tuple[Doc, ...]],
                   labels: Callable[[Any], tuple[str, ...]] | None = None) -> tuple[tuple[Query, ...], dict[str, int]]:
    known = {scene: {d.id for d in docs} for scene, docs in scenes.items()}
    out: list[Query] = []
    dropped: defaultdict[str, int] = defaultdict(int)
    for q in dataset.questions:
        ids = known.get(q.scene)
        if ids is None:
            dropped["no scene"] += 1
            continue
        gold = tuple(g for g in q.evidence if g in ids)
        if len(gold) < len(q.evidence):
            dropped["evidence ids naming no document (removed from qrels)"] += len(q.evidence) - len(gold)
        gold_labels = labels(q) if labels else ()
        if not gold and not gold_labels:
            dropped["queries without evidence (not scored)"] += 1
            continue
        out.append(Query(q.id, q.scene, q.text, q.category, gold, q.answer, gold_labels, q.meta))
    return tuple(out), dict(dropped)


def conversation_task(dataset: Dataset, memory_type: str = "dialogue", **kw: Any) -> Task:
    """Documents = turns (message id = turn id), scenes = conversations, written session by session."""
    labels = kw.pop("labels", None)
    scenes = {
        conv.id: tuple(
            Doc(t.id, t.text, t.speaker, t.role, t.timestamp or s.timestamp, s.id)
            for s in conv.sessions
            for t in s.turns
        )
        for conv in dataset.conversations
    }
    queries, dropped = _build_queries(dataset, scenes, labels)
    return Task(name=dataset.name, memory_type=memory_type, scenes=scenes, queries=queries,
                files=dataset.files, notes=dataset.notes, dropped=dropped, **kw)


def corpus_task(dataset: Dataset, memory_type: str, **kw: Any) -> Task:
    """Documents = corpus records (message content = title + text), one scene per corpus."""
    scenes = {
        scene: tuple(
            Doc(d.id, f"{d.title}\n{d.text}" if d.title else d.text, timestamp=d.timestamp, session=d.session)
            for d in docs
        )
        for scene, docs in dataset.corpus.items()
    }
    queries, dropped = _build_queries(dataset, scenes)
    kw.setdefault("infer", False)
    return Task(name=dataset.name, memory_type=memory_type, scenes=scenes, queries=queries,
                files=dataset.files, notes=dataset.notes, dropped=dropped, **kw)


def write_lmeb(task: Task, out_dir: Path) -> None:
    """Write the task in LMEB/MTEB layout: corpus.jsonl, queries.jsonl, qrels.tsv, candidates.jsonl.

    Scene-scoped ids: scene i becomes `scene_i`, documents `scene_i_<doc id>`, queries `scene_i_q_<n>`
    (LMEB takes a query's scene from the first two `_`-separated parts of its id).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    scoped = list(task.scenes) != ["all"]
    key = {scene: f"scene_{i}" for i, scene in enumerate(task.scenes)}

    def doc_id(scene: str, doc: str) -> str:
        return f"{key[scene]}_{doc}" if scoped else doc

    with (out_dir / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for scene, docs in task.scenes.items():
            for d in docs:
                title = d.timestamp.isoformat() if d.timestamp else ""
                text = f"{d.speaker}: {d.content}" if d.speaker else d.content
                f.write(json.dumps({"id": doc_id(scene, d.id), "title": title, "text": text}) + "\n")
    with (out_dir / "queries.jsonl").open("w", encoding="utf-8") as fq, (out_dir / "qrels.tsv").open("w") as fr:
        for n, q in enumerate(task.queries):
            qid = f"{key[q.scene]}_q_{n}" if scoped else q.id
            fq.write(json.dumps({"id": qid, "text": q.text, "category": q.category, "source_id": q.id}) + "\n")
            for g in q.gold:
                fr.write(f"{qid}\t{doc_id(q.scene, g)}\t1\n")
    if scoped:
        with (out_dir / "candidates.jsonl").open("w", encoding="utf-8") as f:
            for scene, docs in task.scenes.items():
                f.write(json.dumps({"scene_id": key[scene], "candidate_doc_ids": [doc_id(scene, d.id) for d in docs]}) + "\n")


# --- the benchmarks of the suite ------------------------------------------------------------------


def _locomo(data: Path) -> Task:
    from evals.datasets.locomo import RETRIEVAL_CATEGORIES, load_locomo

    return conversation_task(load_locomo(data), main_categories=RETRIEVAL_CATEGORIES)


def _realtalk(data: Path) -> Task:
    from evals.datasets.realtalk import load_realtalk

    return conversation_task(load_realtalk(data))


def _tmd(data: Path) -> Task:
    from evals.datasets.tmd import load_tmd

    return conversation_task(load_tmd(data))


def _longmemeval(data: Path, question_ids: Path | None = None) -> Task:
    from evals.datasets.longmemeval import load_longmemeval, read_question_ids, session_of

    ids = read_question_ids(question_ids) if question_ids else None
    return conversation_task(
        load_longmemeval(data, ids),
        labels=lambda q: tuple(q.meta.get("answer_session_ids") or ()),
        label_of=session_of,
    )


def _knowmebench(data: Path) -> Task:
    from evals.datasets.knowmebench import RETRIEVAL_TASKS, load_knowmebench, slug

    ds = load_knowmebench(data)
    keep = {slug(t) for t in RETRIEVAL_TASKS}
    ds = replace(ds, questions=tuple(q for q in ds.questions if q.category in keep))
    return corpus_task(ds, "episodic")


def _procedural(loader_name: str) -> Callable[[Path], Task]:
    def build(data: Path) -> Task:
        from evals.datasets import procedural

        return corpus_task(getattr(procedural, loader_name)(data), "procedural")

    return build


def _semantic(loader_name: str) -> Callable[[Path], Task]:
    def build(data: Path) -> Task:
        from evals.datasets import hipporag

        return corpus_task(getattr(hipporag, loader_name)(data), "semantic")

    return build


BENCHMARKS: dict[str, Callable[..., Task]] = {
    "locomo": _locomo,
    "longmemeval": _longmemeval,
    "realtalk": _realtalk,
    "tmd": _tmd,
    "knowmebench": _knowmebench,
    "proced_mem_bench": _procedural("load_proced_mem_bench"),
    "reme": _procedural("load_reme"),
    "gorilla": _procedural("load_gorilla"),
    "toolbench": _procedural("load_toolbench"),
    "musique": _semantic("load_musique"),
    "hotpotqa": _semantic("load_hotpotqa"),
}


def build_task(name: str, data: Path, **options: Any) -> Task:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](data, **options)
