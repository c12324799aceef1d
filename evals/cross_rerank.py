"""Cross-validated measurement of a cross-encoder second stage (`evals.cross_encoder`).

The same folds by scene as `memsvc train gates`: per fold, the first-stage head and the
cross-encoder are trained on the other folds' queries only, and the held-out fold's queries are
scored: fused order, the first stage (per length, as the read path orders it), the first stage's top
`depth` re-sorted by the cross-encoder alone, and by the sum of both logits (both are listwise
softmax scores, so the sum is a product of the two models' odds; declared before the run, not
tuned), per length.

Measured (2026-12-04, Xeon, 2 cores; `python -m evals.cross_rerank --tasks locomo,realtalk --depth 30
--cache eval-out/gates-cache`; 5 folds, 3 layers; both models trained on LoCoMo + REALTALK): LoCoMo
WR@500 / ER@10 first stage 75.8 / 68.6, + cross-encoder 76.5 / 72.2 (multi-hop ER@10 44.9 -> 50.0),
REALTALK 71.2 / 64.8 -> 72.2 / 65.9; the cross-encoder alone 73.0 / 62.8. Training 3 min per fold;
scoring 5.0 ms per pair, so depth 30 costs ~150 ms a query on CPU: a GPU-hosted stage, not served yet.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from evals.cli import DEV_SUITE
from evals.cross_encoder import PairGroup, fit_cross, pair_text
from evals.datasets.base import default_data_root
from evals.gates_data import BASE_POOL, QueryExample, load_or_collect
from evals.tasks import build_task
from evals.train_gates import _mean_rows, query_metrics
from memsvc.learn.features import per_token_order
from memsvc.learn.train import ListGroup, fit_reranker, folds_by_group, score_lists

SYSTEMS = ("fused", "rerank", "cross", "rerank+cross")


def _texts(ex: QueryExample, idx: list[int]) -> list[str]:
    return [pair_text(ex.contents[i], ex.dates[i] if ex.dates else "") for i in idx]


def _order(scores: np.ndarray) -> list[int]:
    return sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))


def pair_group(ex: QueryExample, order: list[int], depth: int) -> PairGroup:
    top = order[:depth]
    pos = [i for i in range(len(ex.labels)) if ex.labels[i]]
    neg = [i for i in top if not ex.labels[i]]
    return PairGroup(ex.text, tuple(_texts(ex, pos)), tuple(_texts(ex, neg)))


def run(tasks: list[str], cache: Path, data: Path | None, k: int, depth: int, layers: int, negatives: int,
        epochs: int, pools: tuple[str, ...], out: Path | None, folds_only: int | None) -> dict[str, Any]:
    root = data or default_data_root()
    collected = []
    main: dict[str, tuple[str, ...] | None] = {}
    for name in tasks:
        cap, scene_cap = DEV_SUITE.get(name, (None, None))
        selected = build_task(name, root).select(cap, scene_cap)
        main[name] = selected.main_categories
        collected.append(load_or_collect(selected, cache))
    examples = [ex for d in collected for ex in d.queries]
    assert all(ex.contents for ex in examples), "examples collected before contents were kept: clear the cache"
    folds = folds_by_group([ex.group for ex in examples], k)
    rows: list[dict[str, Any]] = []
    timing = {"train_s": 0.0, "pairs_scored": 0, "score_s": 0.0}
    for f in range(k if folds_only is None else folds_only):
        train_idx = [i for i, fo in enumerate(folds) if fo != f]
        held = [i for i, fo in enumerate(folds) if fo == f and examples[i].pool in pools]
        stage1 = fit_reranker([ListGroup(examples[i].features, examples[i].labels) for i in train_idx
                               if examples[i].labels.any()])
        train_ex = [examples[i] for i in train_idx if examples[i].pool == pools[0] and examples[i].labels.any()]
        s_train = score_lists(stage1, [ex.features for ex in train_ex])
        groups = [pair_group(ex, _order(s), depth) for ex, s in zip(train_ex, s_train, strict=True)]
        t0 = time.time()
        bar = tqdm(desc=f"cross fold {f}", unit="step")

        def tick(step: int, total: int, loss: float, bar: Any = bar) -> None:
            bar.total = total
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        model = fit_cross(groups, layers=layers, negatives=negatives, epochs=epochs, progress=tick)
        bar.close()
        timing["train_s"] += time.time() - t0
        s_held = score_lists(stage1, [examples[i].features for i in held])
        for i, s1 in tqdm(list(zip(held, s_held, strict=True)), desc=f"score fold {f}", unit="q"):
            ex = examples[i]
            order = per_token_order(s1, ex.words)
            top = order[:depth]
            t1 = time.time()
            ce = np.array(model.score(ex.text, _texts(ex, top)))
            timing["score_s"] += time.time() - t1
            timing["pairs_scored"] += len(top)
            s1_top = np.array([float(s1[j]) for j in top])
            by_ce = [top[j] for j in np.argsort(-ce, kind="stable")] + order[depth:]
            by_both = [top[j] for j in per_token_order(s1_top + ce, [ex.words[j] for j in top])] + order[depth:]
            rows.append({"task": ex.task, "pool": ex.pool, "category": ex.category, "fold": f,
                         "fused": query_metrics(ex, list(range(len(s1)))), "rerank": query_metrics(ex, order),
                         "cross": query_metrics(ex, by_ce), "rerank+cross": query_metrics(ex, by_both)})
    summary: dict[str, Any] = {}
    for task in tasks:
        for pool in pools:
            cats = main.get(task)
            sel = [r for r in rows if r["task"] == task and r["pool"] == pool and (cats is None or r["category"] in cats)]
            if not sel:
                continue
            entry: dict[str, Any] = {s: _mean_rows([r[s] for r in sel]) for s in SYSTEMS}
            entry["by_category"] = {
                c: {s: _mean_rows([r[s] for r in rows if r["task"] == task and r["pool"] == pool and r["category"] == c])
                    for s in SYSTEMS}
                for c in sorted({r["category"] for r in rows if r["task"] == task})}
            summary[f"{task}/{pool}"] = entry
    timing["ms_per_pair"] = round(1000 * timing["score_s"] / max(1, timing["pairs_scored"]), 2)
    report = {"config": {"tasks": tasks, "folds": k, "depth": depth, "layers": layers, "negatives": negatives,
                         "epochs": epochs, "pools": list(pools)}, "timing": timing, "summary": summary}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict[str, Any]) -> str:
    lines = ["| task / category | n | " + " | ".join(f"{s} WR@500" for s in SYSTEMS) + " | "
             + " | ".join(f"{s} ER@10" for s in SYSTEMS) + " |"]
    for key, entry in report["summary"].items():
        def row(name: str, e: dict[str, Any]) -> str:
            return (f"| {name} | {e['fused']['n']} | " + " | ".join(f"{100 * e[s]['WR@500']:.1f}" for s in SYSTEMS)
                    + " | " + " | ".join(f"{100 * e[s]['ER@10']:.1f}" for s in SYSTEMS) + " |")
        lines.append(row(key, entry))
        for cat, e in entry["by_category"].items():
            lines.append(row(f"  {cat}", e))
    return "\n".join(lines)


def main(
    tasks: Annotated[str, typer.Option()] = "locomo,realtalk",
    cache: Annotated[Path, typer.Option()] = Path("eval-out/gates-cache"),
    data: Annotated[Path | None, typer.Option()] = None,
    folds: Annotated[int, typer.Option()] = 5,
    depth: Annotated[int, typer.Option(help="first-stage candidates the cross-encoder re-sorts")] = 20,
    layers: Annotated[int, typer.Option(help="MiniLM layers kept")] = 3,
    negatives: Annotated[int, typer.Option()] = 5,
    epochs: Annotated[int, typer.Option()] = 1,
    pools: Annotated[str, typer.Option()] = BASE_POOL,
    out: Annotated[Path | None, typer.Option()] = None,
    folds_only: Annotated[int | None, typer.Option(help="run only the first N folds (quick looks)")] = None,
) -> None:
    report = run([t.strip() for t in tasks.split(",")], cache, data, folds, depth, layers, negatives, epochs,
                 tuple(p.strip() for p in pools.split(",")), out, folds_only)
    typer.echo(json.dumps(report["timing"]))
    typer.echo(table(report))


if __name__ == "__main__":
    typer.run(main)
