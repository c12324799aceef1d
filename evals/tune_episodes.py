"""Tune surprise segmentation (`memsvc.lifecycle.episodes`) on LoCoMo (dev): how well do surprise
cuts alone recover the session boundaries of a conversation whose sessions are run together?

Each conversation's turns (`speaker: text`, as memsvc stores them) are embedded with the packaged
MiniLM, in order, with no times or sessions; a cut within `TOLERANCE` turns of a true boundary is a
hit (each boundary matched once). For each (gamma, min_turns) of the grid: boundary precision,
recall and F1. Leave-one-conversation-out: the params best on six conversations are scored on the
seventh, so no conversation scores params it chose.

    python -m evals.tune_episodes --out eval-out/tune-episodes
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import typer

from evals.datasets.base import default_data_root
from evals.datasets.locomo import load_locomo
from memsvc.lifecycle.episodes import SegmentParams, boundaries

GAMMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
MIN_TURNS = (2, 4, 8)
TOLERANCE = 2


def boundary_counts(predicted: list[int], gold: list[int], tolerance: int = TOLERANCE) -> tuple[int, int, int]:
    """(hits, predicted, gold): a predicted cut hits the nearest unmatched gold boundary within `tolerance`."""
    left = sorted(gold)
    hits = 0
    for p in sorted(predicted):
        match = next((g for g in left if abs(g - p) <= tolerance), None)
        if match is not None:
            left.remove(match)
            hits += 1
    return hits, len(predicted), len(gold)


def f1(counts: list[tuple[int, int, int]]) -> tuple[float, float, float]:
    hits, pred, gold = (sum(c[i] for c in counts) for i in range(3))
    p = hits / pred if pred else 0.0
    r = hits / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main(
    data: Path = typer.Option(None, help="data root (default ../shared/data)"),
    out: Path = typer.Option(Path("eval-out/tune-episodes"), help="folder for results.json"),
) -> None:
    from memsvc.config import Settings
    from storage.registry import build_embedder

    root = data or default_data_root()
    dataset = load_locomo(root)
    embedder = build_embedder(Settings(), shared=False)
    streams: list[tuple[str, np.ndarray, list[int]]] = []
    for conv in dataset.conversations:
        texts, gold, n = [], [], 0
        for session in conv.sessions:
            if n:
                gold.append(n)
            texts += [f"{t.speaker}: {t.text}" if t.speaker else t.text for t in session.turns]
            n += len(session.turns)
        streams.append((conv.id, embedder.embed(texts), gold))
        typer.echo(f"{conv.id}: {n} turns, {len(gold)} session boundaries", err=True)
    grid = list(itertools.product(GAMMAS, MIN_TURNS))
    counts = {(g, m): [boundary_counts(boundaries(vecs, SegmentParams(gamma=g, min_turns=m)), gold)
                       for _, vecs, gold in streams] for g, m in grid}
    folds = []
    held: list[tuple[int, int, int]] = []
    for k, (conv_id, _, _) in enumerate(streams):
        best = max(grid, key=lambda gm: (f1([c for i, c in enumerate(counts[gm]) if i != k])[2], -gm[0]))
        held.append(counts[best][k])
        folds.append({"held_out": conv_id, "gamma": best[0], "min_turns": best[1], "f1": round(f1([counts[best][k]])[2], 4)})
    table = [{"gamma": g, "min_turns": m, **dict(zip(("precision", "recall", "f1"), (round(x, 4) for x in f1(counts[(g, m)])),
                                                     strict=True))} for g, m in grid]
    overall = max(grid, key=lambda gm: (f1(counts[gm])[2], -gm[0]))
    cv = dict(zip(("precision", "recall", "f1"), (round(x, 4) for x in f1(held)), strict=True))
    # A cut at a random position hits with this probability: the precision of chance.
    near = sum(len({p for g in gold for p in range(g - TOLERANCE, g + TOLERANCE + 1) if 0 < p < len(vecs)})
               for _, vecs, gold in streams)
    chance = round(near / sum(len(vecs) - 1 for _, vecs, _ in streams), 4)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"grid": table, "folds": folds, "cross_validated": cv,
                                                  "best_on_all": {"gamma": overall[0], "min_turns": overall[1]}, "chance_precision": chance,
                                                  "tolerance": TOLERANCE}, indent=2))
    typer.echo("gamma min_turns precision recall f1")
    for row in table:
        typer.echo(f"{row['gamma']:5.1f} {row['min_turns']:9d} {row['precision']:9.3f} {row['recall']:6.3f} {row['f1']:.3f}")
    typer.echo(f"leave-one-conversation-out: {cv}; chosen per fold: {[(f['gamma'], f['min_turns']) for f in folds]}")
    typer.echo(f"best on all conversations: gamma={overall[0]} min_turns={overall[1]}; precision of random cuts: {chance}")


if __name__ == "__main__":
    typer.run(main)
