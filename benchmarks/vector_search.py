"""Vector index benchmark: bulk upsert, filtered dense search and BM25 search.

    .venv/bin/python benchmarks/vector_search.py --n 100000 --dim 384 --backend edge --out edge.json

Random unit vectors spread over `--users` users in `--tenants` tenants, texts drawn from a
Zipf-distributed synthetic vocabulary. Prints a table and writes the numbers as JSON.
Dense recall@10 is measured against exact numpy search over the same filter.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memsvc.models import MemoryStatus, MemoryType  # noqa: E402
from memsvc.ports import VectorFilter, VectorIndex, VectorPayload, VectorPoint  # noqa: E402
from storage.vectors.edge import EdgeVectorIndex  # noqa: E402
from storage.vectors.qdrant import QdrantVectorIndex  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TYPES = list(MemoryType)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="points")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--backend", choices=["edge", "qdrant-local"], default="edge")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000, help="points per upsert call")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--path", type=Path, default=None, help="index directory; default a temporary one")
    parser.add_argument("--clusters", type=int, default=0,
                        help="draw vectors around this many topic centres (embedding-like); 0: uniform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args()


def unit_vectors(
    n: int, dim: int, clusters: int, rng: np.random.Generator, centres: np.ndarray | None = None
) -> np.ndarray:
    """Uniform on the sphere, or (clusters > 0) a noisy copy of one of `centres` each."""
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    if clusters > 0 and centres is not None:
        centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        noise = centres[rng.integers(0, clusters, size=n)] + 0.06 * noise
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(4, 10)))) for _ in range(size)]


def texts(n: int, words: list[str], rng: np.random.Generator) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, size=(n, 20)), len(words)) - 1
    lengths = rng.integers(6, 20, size=n)
    return [" ".join(words[r] for r in ranks[i, : lengths[i]]) for i in range(n)]


def open_index(backend: str, path: Path, dim: int) -> VectorIndex:
    if backend == "edge":
        return EdgeVectorIndex(path / "shard", dim)
    return QdrantVectorIndex.local(None, "bench", dim)


def scope(user: int, tenants: int) -> tuple[str, str]:
    return f"tenant-{user % tenants}", f"user-{user}"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


class StallProbe:
    """Measures how long a Python thread waits beyond a 1 ms sleep: GIL hold times."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - start - 0.001)


def timed_searches(
    index: VectorIndex, queries: np.ndarray, filters: list[VectorFilter], limit: int
) -> tuple[list[float], list[list[str]]]:
    times, results = [], []
    for q, f in zip(queries, filters, strict=True):
        start = time.perf_counter()
        hits = index.search(q, f, limit)
        times.append(time.perf_counter() - start)
        results.append([i for i, _ in hits])
    return times, results


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    root = args.path or Path(tempfile.mkdtemp(prefix="memsvc-bench-"))
    result: dict[str, Any] = {
        "backend": args.backend, "n": args.n, "dim": args.dim, "users": args.users,
        "tenants": args.tenants, "batch": args.batch, "limit": args.limit, "clusters": args.clusters,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }

    centres = rng.standard_normal((max(1, args.clusters), args.dim)).astype(np.float32)
    vectors = unit_vectors(args.n, args.dim, args.clusters, rng, centres=centres)
    users = rng.integers(0, args.users, size=args.n)
    active = rng.random(args.n) < 0.9
    words = vocabulary(20_000, rng)
    docs = texts(args.n, words, rng)
    ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, size=args.n)]

    def make_point(i: int) -> VectorPoint:
        tenant, user_id = scope(int(users[i]), args.tenants)
        payload = VectorPayload(
            tenant=tenant, user_id=user_id, type=TYPES[i % len(TYPES)],
            status=MemoryStatus.ACTIVE if active[i] else MemoryStatus.SUPERSEDED,
            created_at=T0 + timedelta(minutes=i), session_id=f"s{i % 500}",
            metadata={"source": "bench", "n": i % 7},
        )
        return VectorPoint(id=ids[i], vector=vectors[i], text=docs[i], payload=payload)

    index = open_index(args.backend, root, args.dim)
    try:
        start = time.perf_counter()
        with StallProbe() as probe:
            for lo in range(0, args.n, args.batch):
                index.upsert([make_point(i) for i in range(lo, min(args.n, lo + args.batch))])
            index.flush()
        upsert_s = time.perf_counter() - start
        result["upsert_worst_stall_ms"] = 1000 * probe.worst
        result["upsert_s"] = upsert_s
        result["upsert_points_per_s"] = args.n / upsert_s

        qusers = rng.integers(0, args.users, size=args.queries)
        filters = [
            VectorFilter(tenant=scope(int(u), args.tenants)[0], user_id=scope(int(u), args.tenants)[1],
                         statuses=[MemoryStatus.ACTIVE])
            for u in qusers
        ]
        qvecs = unit_vectors(args.queries, args.dim, args.clusters, rng, centres=centres)

        if isinstance(index, EdgeVectorIndex):
            times, _ = timed_searches(index, qvecs, filters, args.limit)
            result["search_before_optimize"] = percentiles(times)
            start = time.perf_counter()
            index.optimize()  # waits for a background run, then finishes what is left
            result["final_optimize_s"] = time.perf_counter() - start
            info = index.info()
            result["segments"] = info.segments_count
            result["indexed_vectors"] = info.indexed_vectors_count

        index.search(qvecs[0], filters[0], args.limit)  # warm-up
        times, found = timed_searches(index, qvecs, filters, args.limit)
        result["search"] = percentiles(times)

        # Recall@limit against exact search over the same filter.
        recalls = []
        for q, u, got in zip(qvecs, qusers, found, strict=True):
            mask = (users == u) & active
            cand = np.nonzero(mask)[0]
            top = cand[np.argsort(-(vectors[cand] @ q))[: args.limit]]
            expected = {ids[i] for i in top}
            recalls.append(len(expected & set(got)) / max(1, len(expected)))
        result["search_recall"] = statistics.fmean(recalls)

        text_queries = [
            " ".join(words[min(int(r), len(words)) - 1] for r in rng.zipf(1.3, size=int(rng.integers(2, 5))))
            for _ in range(args.queries)
        ]
        times, hits = [], 0
        for text, f in zip(text_queries, filters, strict=True):
            start = time.perf_counter()
            got = index.search_text(text, f, args.limit)
            times.append(time.perf_counter() - start)
            hits += bool(got)
        result["text"] = percentiles(times)
        result["text_queries_with_hits"] = hits
    finally:
        index.close()
        if args.path is None:
            shutil.rmtree(root, ignore_errors=True)

    print_table(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("backend", r["backend"]),
        ("points x dim", f"{r['n']} x {r['dim']}" + (f", {r['clusters']} clusters" if r["clusters"] else ", uniform")),
        ("upsert points/s", f"{r['upsert_points_per_s']:.0f}  ({r['upsert_s']:.1f} s)"),
    ]
    rows.append(("worst GIL stall during upserts ms", f"{r['upsert_worst_stall_ms']:.0f}"))
    if "final_optimize_s" in r:
        b = r["search_before_optimize"]
        rows += [
            ("search before final optimize p50/p95 ms", f"{b['p50_ms']:.2f} / {b['p95_ms']:.2f}"),
            ("final optimize s", f"{r['final_optimize_s']:.1f}  (segments {r['segments']}, "
                                 f"indexed vectors {r['indexed_vectors']})"),
        ]
    s, t = r["search"], r["text"]
    rows += [
        ("search p50/p95 ms", f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}"),
        (f"search recall@{r['limit']}", f"{r['search_recall']:.3f}"),
        ("text p50/p95 ms", f"{t['p50_ms']:.2f} / {t['p95_ms']:.2f}"),
        ("text queries with hits", str(r["text_queries_with_hits"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
