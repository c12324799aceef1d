"""`memsvc train cross`: the read gate's second stage (`memsvc.learn.cross`), cross-validated and trained.

The same folds by scene as `memsvc train gates`: per fold, a first-stage head (`RerankHead` on the
collected features) and the cross-encoder are trained on the other folds' queries only, the
cross-encoder's weights are put through storage (int8 rows, as the artefact holds them), and the
held-out fold's queries are scored: fused order, the first stage (per length, as the read path
orders it), the first stage's top `depth` re-sorted by the cross-encoder alone, and by the sum of
both logits (both are listwise softmax scores, so the sum is a product of the two models' odds;
declared before the run, not tuned), per length — the order the `*_cross` presets serve. Then the
shipped model is fitted on every scene and written with its manifest.

Measured first (2026-12-04, Xeon, 2 cores; this cross-validation over LoCoMo + REALTALK at depth 30;
5 folds, 3 layers): LoCoMo WR@500 / ER@10 first stage 75.8 / 68.6, + cross-encoder 76.5 / 72.2
(multi-hop ER@10 44.9 -> 50.0), REALTALK 71.2 / 64.8 -> 72.2 / 65.9; the cross-encoder alone 73.0 /
62.8. Training 3 min per fold; scoring 5.0 ms per pair on CPU.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tqdm import tqdm

from evals.cli import DEV_SUITE
from evals.datasets.base import default_data_root
from evals.gates_data import BASE_POOL, QueryExample, TaskData, load_or_collect
from evals.tasks import build_task
from evals.train_gates import TRAIN_TASKS, _mean_rows, query_metrics, train_app
from memsvc.learn import cross as X
from memsvc.learn.artefact import Manifest, checksums
from memsvc.learn.cross import CrossEncoder, PairGroup, fit_cross, pair_text
from memsvc.learn.features import per_token_order
from memsvc.learn.nets import RerankHead
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


def fit_stages(examples: list[QueryExample], *, depth: int, layers: int, negatives: int, epochs: int,
               base_pool: str, progress: bool, desc: str) -> tuple[RerankHead, CrossEncoder]:
    """A first-stage head on `examples`, its top `depth` as the hard negatives, the cross-encoder on
    them; both returned, the cross-encoder as stored (int8 rows and back)."""
    stage1 = fit_reranker([ListGroup(ex.features, ex.labels) for ex in examples if ex.labels.any()])
    train_ex = [ex for ex in examples if ex.pool == base_pool and ex.labels.any()]
    s_train = score_lists(stage1, [ex.features for ex in train_ex])
    groups = [pair_group(ex, _order(s), depth) for ex, s in zip(train_ex, s_train, strict=True)]
    bar = tqdm(desc=desc, unit="step", disable=not progress)

    def tick(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    model = fit_cross(groups, layers=layers, negatives=negatives, epochs=epochs, progress=tick)
    bar.close()
    return stage1, X.stored_copy(model)


def collect(tasks: list[str], cache: Path, root: Path, progress: bool) -> tuple[list[TaskData], dict[str, tuple[str, ...] | None]]:
    collected = []
    main: dict[str, tuple[str, ...] | None] = {}
    for name in tasks:
        cap, scene_cap = DEV_SUITE.get(name, (None, None))
        selected = build_task(name, root).select(cap, scene_cap)
        main[name] = selected.main_categories
        collected.append(load_or_collect(selected, cache, progress=progress))
    return collected, main


def run(collected: list[TaskData], main: dict[str, tuple[str, ...] | None], k: int, depth: int, layers: int,
        negatives: int, epochs: int, pools: tuple[str, ...], folds_only: int | None = None,
        progress: bool = True, folds_out: Path | None = None) -> dict[str, Any]:
    """The cross-validation: per (task, pool) and category, the mean metrics of each of `SYSTEMS`. With
    `folds_out`, each fold's cross-encoder is written there (`fold-<f>.pt`, as stored) for the eval
    suite's real-path runs (`memsvc eval … --systems memsvc-cross`), which score a scene with the
    fold model that never saw it."""
    examples = [ex for d in collected for ex in d.queries]
    assert all(ex.contents for ex in examples), "examples collected before contents were kept: clear the cache"
    folds = folds_by_group([ex.group for ex in examples], k)
    rows: list[dict[str, Any]] = []
    timing = {"train_s": 0.0, "pairs_scored": 0, "score_s": 0.0}
    for f in range(k if folds_only is None else folds_only):
        train_idx = [i for i, fo in enumerate(folds) if fo != f]
        held = [i for i, fo in enumerate(folds) if fo == f and examples[i].pool in pools]
        t0 = time.time()
        stage1, model = fit_stages([examples[i] for i in train_idx], depth=depth, layers=layers, negatives=negatives,
                           epochs=epochs, base_pool=pools[0], progress=progress, desc=f"cross fold {f}")
        timing["train_s"] += time.time() - t0
        if folds_out is not None:
            folds_out.mkdir(parents=True, exist_ok=True)
            torch.save(X.quantize(X.trained_state(model)), folds_out / f"fold-{f}.pt")
        s_held = score_lists(stage1, [examples[i].features for i in held])
        for i, s1 in tqdm(list(zip(held, s_held, strict=True)), desc=f"score fold {f}", unit="q", disable=not progress):
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
    for task in main:
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
    return {"config": {"tasks": list(main), "folds": k, "depth": depth, "layers": layers, "negatives": negatives,
                       "epochs": epochs, "pools": list(pools)}, "timing": timing, "summary": summary,
            "folds_of": {ex.group: int(fo) for ex, fo in zip(examples, folds, strict=True)}}


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


@train_app.command("cross")
def train_cross(
    data: Annotated[Path | None, typer.Option("--data", help="data root (default $MEMSVC_DATA or ../shared/data)")] = None,
    out: Annotated[Path, typer.Option("--out", help="artefact folder")] = X.PACKAGED,
    cache: Annotated[Path, typer.Option("--cache", help="collected examples (reused when present)")] = Path(
        "eval-out/gates-cache"),
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated training tasks")] = "locomo,realtalk",
    folds: Annotated[int, typer.Option("--folds", min=2, help="k of the k-fold validation by scene")] = 5,
    depth: Annotated[int, typer.Option("--depth", min=2, help="first-stage candidates the cross-encoder re-sorts")] = 30,
    layers: Annotated[int, typer.Option("--layers", min=1, max=6, help="MiniLM layers kept")] = 3,
    negatives: Annotated[int, typer.Option("--negatives", min=1)] = 5,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    pools: Annotated[str, typer.Option("--pools")] = BASE_POOL,
    folds_only: Annotated[int | None, typer.Option("--folds-only", help="cross-validate only the first N folds "
                                                   "(quick looks; no artefact is written)")] = None,
    folds_out: Annotated[Path, typer.Option("--folds-out", help="where each fold's model goes (for the eval suite's "
                                            "cross-validated real-path runs; not packaged)")] = X.FOLDS,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Cross-validate the read gate's cross-encoder stage by scene, then train it on every scene and
    write `out/manifest.json` + weights (served by the `*_cross` presets)."""
    started = time.time()
    root = data or default_data_root()
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    bad = [n for n in names if n not in TRAIN_TASKS]
    if bad:
        raise typer.BadParameter(f"not a training task: {bad} (training tasks: {', '.join(TRAIN_TASKS)})")
    pool_names = tuple(p.strip() for p in pools.split(",") if p.strip())
    collected, main = collect(names, cache, root, progress)
    report = run(collected, main, folds, depth, layers, negatives, epochs, pool_names, folds_only, progress,
                 folds_out if folds_only is None else None)
    typer.echo(json.dumps(report["timing"]), err=True)
    typer.echo(table(report), err=True)
    if folds_only is not None:
        return
    t0 = time.time()
    _, model = fit_stages([ex for d in collected for ex in d.queries], depth=depth, layers=layers, negatives=negatives,
                       epochs=epochs, base_pool=pool_names[0], progress=progress, desc="cross (all scenes)")
    fit_s = time.time() - t0
    manifest = Manifest(
        name=X.NAME, version=X.VERSION, created=datetime.now(UTC),
        command=shlex.join(["memsvc", *sys.argv[1:]]) if sys.argv else "memsvc train cross",
        data=checksums([f for d in collected for f in d.files], root),
        config={**report["config"], "selections": {n: DEV_SUITE.get(n) for n in names},
                "seconds": {"cross_validate": round(report["timing"]["train_s"] + report["timing"]["score_s"], 1),
                            "fit": round(fit_s, 1), "total": round(time.time() - started, 1)},
                "ms_per_pair_cpu": report["timing"]["ms_per_pair"], "folds_of": report["folds_of"]},
        metrics={"cross": report["summary"]},
        heads={"cross": X.head_spec(layers)},
    )
    X.save(out, model, manifest)
    X.stamp_folds(folds_out, manifest)
    typer.echo(f"wrote {out} in {time.time() - started:.0f} s", err=True)
