"""Write throughput of one client: turns per second acknowledged, and indexed, on LoCoMo turns.

    python benchmarks/write_rate.py --batches 20,50 --conversations 2 --out eval-out/bench-write-rate.json
    MEMSVC_OUTBOX__DEFER_GRAPH=true python benchmarks/write_rate.py     # graph indexing in the background
    MEMSVC_GRAPH__KIND=falkordb MEMSVC_GRAPH__PORT=6380 python benchmarks/write_rate.py --infer on \
        --batches 50 --searches 200 --preset hybrid_ppr                 # FalkorDB; then searches

Development conversations of LoCoMo are written session by session in requests of `--batches`
turns, through `MemoryOS.add` (the REST API's code path), with `infer` on (the skill runtime, the
write gate, resolution, the graph) and off (episodic turns only). `ack` is turns per second until
the last response; `indexed` until the outbox is empty as well (the same unless graph indexing is
deferred to the background drain). Each configuration writes into a fresh data directory; the
models load before the clock starts. With `--searches N`, the conversation's questions are then
searched N times in turn (top 10, `--preset`, after one warm-up search) and p50 / p95 ms reported.
The graph backend is the configured one (`MEMSVC_GRAPH__KIND`). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from evals.datasets.base import default_data_root
from evals.runner import to_message, write_batches
from evals.tasks import build_task
from memsvc.config import Settings
from memsvc.schemas import SearchRequest, WriteRequest
from storage.registry import build_memory_os


def run(docs: list, batch: int, infer: bool, folder: Path,  # type: ignore[type-arg]
        questions: Sequence[str] = (), searches: int = 0, preset: str | None = None) -> dict[str, float]:
    os_ = build_memory_os(Settings(data_dir=folder))
    timings: list[float] = []
    try:
        reqs = [WriteRequest(user_id="bench", session_id=b[0].session, infer=infer, messages=[to_message(d) for d in b])
                for b in write_batches(docs, batch)]
        os_.add("warm", WriteRequest(user_id="warm", messages=[to_message(docs[0])]))  # loads what loads lazily
        start = time.perf_counter()
        for req in reqs:
            os_.add("bench", req)
        acked = time.perf_counter() - start
        while os_.outbox.stats()["pending"] + os_.outbox.stats()["retrying"] > 0:
            time.sleep(0.05)
        indexed = time.perf_counter() - start
        if searches and questions:
            os_.search("bench", SearchRequest(user_id="bench", query=questions[0], top_k=10, preset=preset))
            for i in range(searches):
                t0 = time.perf_counter()
                os_.search("bench", SearchRequest(user_id="bench", query=questions[i % len(questions)], top_k=10,
                                                  preset=preset))
                timings.append(1000 * (time.perf_counter() - t0))
    finally:
        os_.close()
    n = len(docs)
    row: dict[str, float] = {"batch": batch, "infer": infer, "turns": n, "ack_turns_per_s": round(n / acked, 1),
                             "indexed_turns_per_s": round(n / indexed, 1)}
    if timings:
        q = statistics.quantiles(timings, n=20)
        row |= {"searches": len(timings), "search_p50_ms": round(statistics.median(timings), 1),
                "search_p95_ms": round(q[18], 1)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="20,50")
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--infer", choices=["both", "on", "off"], default="both")
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-write-rate.json"))
    ap.add_argument("--searches", type=int, default=0, help="searches after the writes (p50 / p95 ms)")
    ap.add_argument("--preset", default=None, help="the searches' preset (default: the service's)")
    args = ap.parse_args()
    task = build_task("locomo", default_data_root()).select(None, args.conversations)
    docs = [d for ds in task.scenes.values() for d in ds]
    questions = [q.text for q in task.queries]
    infers = {"both": [True, False], "on": [True], "off": [False]}[args.infer]
    rows = []
    for infer in infers:
        for batch in (int(b) for b in args.batches.split(",")):
            with tempfile.TemporaryDirectory(prefix="memsvc-rate-") as folder:
                row = run(docs, batch, infer, Path(folder), questions, args.searches, args.preset)
            rows.append(row)
            print(json.dumps(row), flush=True)
    defer = os.environ.get("MEMSVC_OUTBOX__DEFER_GRAPH", "false")
    graph = os.environ.get("MEMSVC_GRAPH__KIND", "sql")
    print(f"\nLoCoMo turns: {len(docs)}; graph {graph}, deferred: {defer}; {os.cpu_count()} cores")
    print("| infer | batch | ack turns/s | indexed turns/s | search p50 / p95 ms |\n|---|---:|---:|---:|---:|")
    for r in rows:
        search = f"{r['search_p50_ms']} / {r['search_p95_ms']}" if "searches" in r else "–"
        print(f"| {r['infer']} | {r['batch']} | {r['ack_turns_per_s']} | {r['indexed_turns_per_s']} | {search} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"graph": graph, "defer_graph": defer, "preset": args.preset, "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
