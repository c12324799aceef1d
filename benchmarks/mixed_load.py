"""Searches while a writer ingests: recall latency and write throughput under a mixed load.

    python benchmarks/mixed_load.py --seconds 60 --searchers 4
    MEMSVC_EMBEDDER__KIND=sentence-transformers MEMSVC_EMBEDDER__TORCH_THREADS=1 python benchmarks/mixed_load.py

`--writers` threads each write batches of `--batch` messages into their own user's scope while
`--searchers` threads search those scopes, all through one in-process `MemoryOS` (the code path of
the REST API, whose request threads call it the same way). A warm-up of `--preload` messages per
scope comes first. Prints search p50/p95 and searches/s, write messages/s (wall clock, all writers)
and write latency, and the torch settings they were measured with.

    python benchmarks/mixed_load.py --writers 4 --searchers 12 --seconds 60 --out eval-out/bench-mixed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from write_recall import message, pct  # benchmarks/ is the script folder, first on sys.path

from memsvc.config import Settings
from memsvc.schemas import SearchRequest, WriteRequest
from storage.registry import build_memory_os

QUERIES = [
    "Where does my sister live?", "Who recommended the ramen place?", "When is the pottery class?",
    "What did Greta say about the tacos?", "Which trip are we planning?", "How long have I been climbing?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--searchers", type=int, default=4)
    ap.add_argument("--writers", type=int, default=1, help="writer clients, each writing its own user's scope")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--preload", type=int, default=2000, help="messages written into each scope first")
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause of a searcher between its searches")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument("--switch-ms", type=float, default=None, help="the interpreter's thread switch interval")
    ap.add_argument("--write-slots", type=int, default=0, help="writes at once in the benchmark (0: no limit)")
    args = ap.parse_args()

    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    slots = threading.BoundedSemaphore(args.write_slots) if args.write_slots else contextlib.nullcontext()
    rng = random.Random(7)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    counter = iter(range(10**9))
    users = [f"u{w}" for w in range(max(1, args.writers))]
    with tempfile.TemporaryDirectory(prefix="memsvc-mixed-") as folder:
        memory = build_memory_os(Settings(data_dir=folder))
        try:
            for user in users:
                for start in range(0, args.preload, 100):
                    memory.add("bench", WriteRequest(user_id=user, messages=[
                        message(rng, next(counter), t0) for _ in range(min(100, args.preload - start))]))
            stop = threading.Event()
            latencies: list[float] = []
            write_latencies: list[float] = []
            written = [0]
            lock = threading.Lock()

            def writer(user: str, seed: int) -> None:
                wrng = random.Random(seed)
                while not stop.is_set():
                    with lock:
                        msgs = [message(wrng, next(counter), t0) for _ in range(args.batch)]
                    began = time.perf_counter()
                    with slots:
                        memory.add("bench", WriteRequest(user_id=user, messages=msgs))
                    with lock:
                        written[0] += len(msgs)
                        write_latencies.append((time.perf_counter() - began) * 1000)

            def searcher(seed: int) -> None:
                srng = random.Random(seed)
                while not stop.is_set():
                    began = time.perf_counter()
                    memory.search("bench", SearchRequest(user_id=srng.choice(users), query=srng.choice(QUERIES), top_k=10))
                    latencies.append((time.perf_counter() - began) * 1000)
                    if args.think_ms:
                        stop.wait(args.think_ms / 1000)

            threads = [threading.Thread(target=writer, args=(u, 11 + i)) for i, u in enumerate(users[:args.writers])]
            threads += [threading.Thread(target=searcher, args=(i,)) for i in range(args.searchers)]
            began = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
            wall = time.perf_counter() - began
        finally:
            memory.close()

    import torch

    row = {
        "writers": args.writers, "searchers": args.searchers, "batch": args.batch, "think_ms": args.think_ms,
        "seconds": round(wall, 1), "searches": len(latencies), "searches_per_s": round(len(latencies) / wall, 1),
        "search_p50_ms": round(statistics.median(latencies), 1), "search_p95_ms": round(pct(latencies, 95), 1),
        "written_messages": written[0], "write_messages_per_s": round(written[0] / wall, 1),
        "write_p50_ms": round(statistics.median(write_latencies), 1) if write_latencies else None,
        "write_p95_ms": round(pct(write_latencies, 95), 1) if write_latencies else None,
        "torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "switch_ms": round(sys.getswitchinterval() * 1000, 2), "write_slots": args.write_slots,
    }
    print(f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"{args.searchers} searchers + {args.writers} writers for {wall:.0f} s")
    print(json.dumps(row))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
