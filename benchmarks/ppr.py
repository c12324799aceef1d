"""Personalized PageRank: memsvc.graph.ppr against networkx.pagerank on random graphs.

    .venv/bin/python benchmarks/ppr.py [--json eval-out/bench_ppr.json] [--repeat 3]

Prints one row per graph size (best of `--repeat` runs, seconds) and writes the same as JSON.
Both sides use damping 0.5 and stop at an L1 change of 1e-8 per iteration (networkx's `tol`
is per node, so it gets tol / n); `max |diff|` is the largest difference of their scores.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy

from memsvc.graph.matrix import build_adjacency, build_mentions
from memsvc.graph.ppr import personalized_pagerank, rank_memories

SIZES = [(10_000, 50_000), (100_000, 500_000)]
DAMPING = 0.5
TOL = 1e-8


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def run(nodes: int, edges: int, repeat: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s, o, w = rng.integers(0, nodes, edges), rng.integers(0, nodes, edges), rng.random(edges) + 0.1
    n_mem = nodes // 2  # each memory mentions 3 random entities
    mem_rows = np.repeat(np.arange(n_mem), 3)
    mentions = build_mentions(n_mem, nodes, mem_rows, rng.integers(0, nodes, 3 * n_mem), np.ones(3 * n_mem))
    t_build, a = best(lambda: build_adjacency(nodes, s, o, w), repeat)
    t_build_cm, a_cm = best(lambda: build_adjacency(nodes, s, o, w, mentions), repeat)
    seeds = {int(i): 1.0 for i in rng.integers(0, nodes, 5)}

    t_ours, ours = best(lambda: personalized_pagerank(a, seeds, damping=DAMPING, tol=TOL), repeat)
    t_rank, _ = best(lambda: rank_memories(a_cm, mentions, seeds, damping=DAMPING), repeat)
    t_graph, g = best(lambda: nx.from_scipy_sparse_array(a), 1)
    t_nx, pr = best(
        lambda: nx.pagerank(g, alpha=DAMPING, personalization=seeds, tol=TOL / nodes, max_iter=200), min(repeat, 2)
    )
    diff = float(np.abs(np.array([pr[i] for i in range(nodes)]) - ours).max())
    return {
        "nodes": nodes, "edges": edges, "nnz": int(a.nnz),
        "build_adjacency_s": t_build, "build_adjacency_with_co_mentions_s": t_build_cm,
        "ppr_s": t_ours, "rank_memories_s": t_rank, "networkx_graph_s": t_graph, "networkx_pagerank_s": t_nx,
        "speedup": t_nx / t_ours, "max_abs_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("eval-out/bench_ppr.json"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [run(n, e, args.repeat) for n, e in SIZES]
    head = f"{'nodes':>8} {'edges':>8} {'build A':>9} {'ppr':>9} {'rank mem':>9} {'nx.pagerank':>12} {'speedup':>8} {'max|diff|':>10}"
    print(head)
    for r in rows:
        print(
            f"{r['nodes']:>8} {r['edges']:>8} {r['build_adjacency_s']:>9.4f} {r['ppr_s']:>9.4f} "
            f"{r['rank_memories_s']:>9.4f} {r['networkx_pagerank_s']:>12.4f} {r['speedup']:>7.1f}x {r['max_abs_diff']:>10.2e}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "numpy": np.__version__,
            "scipy": scipy.__version__, "networkx": nx.__version__}
    args.json.write_text(json.dumps({"meta": meta, "damping": DAMPING, "tol": TOL, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
