"""Drive a `MemoryClient` through a task: write every scene into its own user scope, then search.

Writes: one `WriteRequest` per session (chunks of at most `batch` messages), in order, each message
with the document id as its message id, its timestamp, and the speaker as `name` (role `user` for
both people of a conversation). Searches: one `SearchRequest` per query in the query's scope with
`top_k` results. Results are ranked by `score` (memsvc lists results in reader order, which puts
strong memories at both edges), mapped back to documents through `source_ids` (credit only where
`states_source` holds) and scored by `evals.metrics`. Every system of a run gets the same task,
hence the same items.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from evals import metrics as M
from evals.client import MemoryClient
from evals.tasks import Doc, Query, Task
from memsvc.models import Role
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest

MAX_CONTENT_CHARS = 32_000
MAX_QUERY_CHARS = 4_000


@dataclass(frozen=True)
class RunOptions:
    top_k: int = 100
    ks: tuple[int, ...] = (5, 10, 20)
    budgets: tuple[int, ...] = (250, 500, 1000)
    lmeb_ks: tuple[int, ...] = (1, 5, 10, 25, 50)
    batch: int = 100
    infer: bool | None = None  # None: the task's default
    run_id: str = "run"
    progress: bool = True
    states_threshold: float = 0.5


@dataclass
class SystemRun:
    system: str
    items: list[dict[str, Any]] = field(default_factory=list)
    write_seconds: float = 0.0
    messages_written: int = 0
    memories_written: int = 0
    messages_skipped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    search_seconds: float = 0.0

    def throughput(self) -> float:
        return self.messages_written / self.write_seconds if self.write_seconds > 0 else 0.0


@dataclass(frozen=True)
class Hit:
    id: str
    type: str
    score: float | None
    words: int
    source_ids: tuple[str, ...]
    credited: tuple[str, ...]
    content: str
    event_time: str | None = None


QAHook = Callable[[Query, list[Hit]], dict[str, Any]]


def scope_id(task: str, scene: str, run_id: str) -> str:
    """A user id for one scene (the REST contract forbids whitespace and `/` in user ids)."""
    return re.sub(r"[\s/]+", "_", f"{task}-{scene}-{run_id}")[:256]


def write_batches(docs: Sequence[Doc], size: int) -> Iterator[list[Doc]]:
    """Consecutive documents of one session, at most `size` at a time."""
    batch: list[Doc] = []
    for doc in docs:
        if batch and (doc.session != batch[-1].session or len(batch) >= size):
            yield batch
            batch = []
        batch.append(doc)
    if batch:
        yield batch


def to_message(doc: Doc) -> MessageIn:
    return MessageIn(
        id=doc.id, role=Role(doc.role), name=doc.speaker, content=doc.content[:MAX_CONTENT_CHARS],
        timestamp=doc.timestamp,
    )


def source_text(doc: Doc) -> str:
    """A message as written: `speaker: text` (derived memories name the speaker, turns say "I")."""
    return f"{doc.speaker}: {doc.content}" if doc.speaker else doc.content


def to_hits(results: list[dict[str, Any]], docs: dict[str, Doc], threshold: float = 0.5) -> list[Hit]:
    """Rank by score (stable; returned order when a score is missing) and credit stated sources."""
    if results and all(isinstance(r.get("score"), int | float) for r in results):
        results = sorted(results, key=lambda r: -float(r["score"]))
    hits = []
    for r in results:
        content = str(r.get("content") or "")
        sources = tuple(str(s) for s in r.get("source_ids") or [])
        credited = tuple(
            s for s in dict.fromkeys(sources) if s in docs and M.states_source(content, source_text(docs[s]), threshold)
        )
        hits.append(Hit(str(r.get("id")), str(r.get("type")), r.get("score"), len(content.split()), sources,
                        credited, content, r.get("event_time")))
    return hits


def score_hits(credited: list[tuple[str, ...]], words: list[int], gold: Sequence[str], opts: RunOptions,
               prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k in opts.ks:
        out[f"{prefix}ER@{k}"] = M.recall_at_k(credited, gold, k)
        out[f"{prefix}AF@{k}"] = M.all_found_at_k(credited, gold, k)
    for b in opts.budgets:
        out[f"{prefix}WR@{b}"] = M.budget_recall(credited, words, gold, b)
        out[f"{prefix}AFW@{b}"] = M.all_found_within_budget(credited, words, gold, b)
    ranking = M.doc_ranking(credited)
    out[f"{prefix}nDCG@10"] = M.ndcg_at_k(ranking, gold, 10)
    for k in opts.lmeb_ks:
        out[f"{prefix}R@{k}"] = M.doc_recall_at_k(ranking, gold, k)
    return out


def score_query(query: Query, hits: list[Hit], task: Task, opts: RunOptions) -> dict[str, float]:
    credited = [h.credited for h in hits]
    words = [h.words for h in hits]
    out = score_hits(credited, words, query.gold, opts) if query.gold else {}
    if query.gold_labels and task.label_of is not None:
        labels = [tuple(dict.fromkeys(task.label_of(s) for s in c)) for c in credited]
        out.update(score_hits(labels, words, query.gold_labels, opts, prefix=f"{task.label_name}_"))
    return out


def write_task(task: Task, client: MemoryClient, run: SystemRun, opts: RunOptions) -> None:
    infer = task.infer if opts.infer is None else opts.infer
    bar = tqdm(total=task.n_docs, desc=f"{task.name}/{run.system} write", unit="msg",
               disable=not opts.progress, leave=False)
    for scene, docs in task.scenes.items():
        user = scope_id(task.name, scene, opts.run_id)
        for batch in write_batches(docs, opts.batch):
            req = WriteRequest(user_id=user, session_id=batch[0].session, infer=infer,
                               messages=[to_message(d) for d in batch])
            start = time.perf_counter()
            result = client.add(req)
            run.write_seconds += time.perf_counter() - start
            run.messages_written += len(batch)
            run.memories_written += len(result.written)
            run.messages_skipped += len(result.skipped)
            bar.update(len(batch))
    flush = getattr(client, "flush", None)
    if callable(flush):  # baselines index in one batch after the writes
        start = time.perf_counter()
        flush()
        run.write_seconds += time.perf_counter() - start
    bar.close()


def run_system(task: Task, system: str, client: MemoryClient, opts: RunOptions,
               qa: QAHook | None = None) -> SystemRun:
    """Write the task's scenes through `client`, then ask every query and score it."""
    run = SystemRun(system=system)
    write_task(task, client, run, opts)
    docs = {scene: {d.id: d for d in ds} for scene, ds in task.scenes.items()}
    for query in tqdm(task.queries, desc=f"{task.name}/{system} search", unit="q",
                      disable=not opts.progress, leave=False):
        req = SearchRequest(user_id=scope_id(task.name, query.scene, opts.run_id),
                            query=query.text[:MAX_QUERY_CHARS], top_k=opts.top_k)
        start = time.perf_counter()
        result = client.search(req)
        latency = (time.perf_counter() - start) * 1000
        run.latencies_ms.append(latency)
        run.search_seconds += latency / 1000
        hits = to_hits(result.results, docs[query.scene], opts.states_threshold)
        item: dict[str, Any] = {
            "id": query.id,
            "scene": query.scene,
            "category": query.category,
            "gold": list(query.gold),
            "n_results": len(hits),
            "latency_ms": round(latency, 3),
            "metrics": score_query(query, hits, task, opts),
            "first_rank": M.first_ranks([h.credited for h in hits], query.gold),
            "top": [{"id": h.id, "type": h.type, "credited": list(h.credited),
                     "uncredited": [s for s in h.source_ids if s not in h.credited]} for h in hits[:10]],
        }
        if query.gold_labels:
            item["gold_labels"] = list(query.gold_labels)
        if qa is not None:
            item["qa"] = qa(query, hits)
        run.items.append(item)
    return run


def summarise(items: list[dict[str, Any]], main_categories: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean of each metric over the items that have it: headline (main categories), all, per category."""

    def agg(rows: list[dict[str, Any]]) -> dict[str, Any]:
        keys = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
        means = {k: M.mean(r["metrics"][k] for r in rows if k in r["metrics"]) for k in keys}
        qa = [r["qa"] for r in rows if isinstance(r.get("qa"), dict) and "score" in r["qa"]]
        if qa:
            means["QA"] = M.mean(float(x["score"]) for x in qa)
        return {"n": len(rows), "metrics": means}

    cats = list(dict.fromkeys(r["category"] for r in items))
    main = [r for r in items if main_categories is None or r["category"] in main_categories]
    return {
        "headline": agg(main),
        "all": agg(items),
        "by_category": {c: agg([r for r in items if r["category"] == c]) for c in cats},
        "main_categories": list(main_categories) if main_categories is not None else cats,
    }


def system_summary(run: SystemRun, task: Task) -> dict[str, Any]:
    return {
        **summarise(run.items, task.main_categories),
        "latency_ms": {"p50": M.percentile(run.latencies_ms, 50), "p95": M.percentile(run.latencies_ms, 95),
                       "n": len(run.latencies_ms), "total_s": round(run.search_seconds, 3)},
        "write": {"messages": run.messages_written, "seconds": round(run.write_seconds, 3),
                  "messages_per_s": round(run.throughput(), 2), "memories_written": run.memories_written,
                  "skipped": run.messages_skipped},
    }
