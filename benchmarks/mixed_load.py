"""Searches while a writer ingests: recall latency and write throughput under a mixed load.

    python benchmarks/mixed_load.py --seconds 60 --searchers 4
    MEMSVC_EMBEDDER__KIND=sentence-transformers MEMSVC_EMBEDDER__TORCH_THREADS=1 python benchmarks/mixed_load.py

One writer thread writes batches of `--batch` messages into one scope while `--searchers` threads
search it, all through one in-process `MemoryOS` (the code path of the REST API, whose request
threads call it the same way). A warm-up of `--preload` messages comes first. Prints search
p50/p95 and write messages/s, and the torch settings they were measured with.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime

from write_recall import message, pct  # benchmarks/ is the script folder, first on sys.path

from memsvc.config import Settings
from memsvc.schemas import SearchRequest, WriteRequest
from storage.registry import build_memory_os

QUERIES = [
    "Where does my sister live?", "Who recommended the ramen place?", "When is the pottery class?",
    "What did Greta say about the tacos?", "Which trip are we planning?", "How long have I been climbing?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--searchers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--preload", type=int, default=2000)
    args = ap.parse_args()

    rng = random.Random(7)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    counter = iter(range(10**9))
    with tempfile.TemporaryDirectory(prefix="memsvc-mixed-") as folder:
        memory = build_memory_os(Settings(data_dir=folder))
        try:
            for start in range(0, args.preload, 100):
                memory.add("bench", WriteRequest(user_id="u", messages=[
                    message(rng, next(counter), t0) for _ in range(min(100, args.preload - start))]))
            stop = threading.Event()
            latencies: list[float] = []
            written = [0, 0.0]

            def writer() -> None:
                wrng = random.Random(11)
                while not stop.is_set():
                    msgs = [message(wrng, next(counter), t0) for _ in range(args.batch)]
                    began = time.perf_counter()
                    memory.add("bench", WriteRequest(user_id="u", messages=msgs))
                    written[0] += len(msgs)
                    written[1] += time.perf_counter() - began

            def searcher(seed: int) -> None:
                srng = random.Random(seed)
                while not stop.is_set():
                    began = time.perf_counter()
                    memory.search("bench", SearchRequest(user_id="u", query=srng.choice(QUERIES), top_k=10))
                    latencies.append((time.perf_counter() - began) * 1000)

            threads = [threading.Thread(target=writer)] + [
                threading.Thread(target=searcher, args=(i,)) for i in range(args.searchers)]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
        finally:
            memory.close()

    import torch

    print(f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"{args.searchers} searchers + 1 writer for {args.seconds:.0f} s")
    print(f"search: n {len(latencies)}, p50 {statistics.median(latencies):.1f} ms, p95 {pct(latencies, 95):.1f} ms; "
          f"write: {written[0]} messages, {written[0] / max(written[1], 1e-9):.1f} msg/s while writing")


if __name__ == "__main__":
    main()
