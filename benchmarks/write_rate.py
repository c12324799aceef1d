"""Write throughput of one client: turns per second acknowledged, and indexed, on LoCoMo turns.

    python benchmarks/write_rate.py --batches 20,50 --conversations 2 --out eval-out/bench-write-rate.json
    MEMSVC_OUTBOX__DEFER_GRAPH=true python benchmarks/write_rate.py     # graph indexing in the background

Development conversations of LoCoMo are written session by session in requests of `--batches`
turns, through `MemoryOS.add` (the REST API's code path), with `infer` on (the skill runtime, the
write gate, resolution, the graph) and off (episodic turns only). `ack` is turns per second until
the last response; `indexed` until the outbox is empty as well (the same unless graph indexing is
deferred to the background drain). Each configuration writes into a fresh data directory; the
models load before the clock starts. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from evals.datasets.base import default_data_root
from evals.runner import to_message, write_batches
from evals.tasks import build_task
from memsvc.config import Settings
from memsvc.schemas import WriteRequest
from storage.registry import build_memory_os


def run(docs: list, batch: int, infer: bool, folder: Path) -> dict[str, float]:  # type: ignore[type-arg]
    os_ = build_memory_os(Settings(data_dir=folder))
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
    finally:
        os_.close()
    n = len(docs)
    return {"batch": batch, "infer": infer, "turns": n, "ack_turns_per_s": round(n / acked, 1),
            "indexed_turns_per_s": round(n / indexed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="20,50")
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--infer", choices=["both", "on", "off"], default="both")
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-write-rate.json"))
    args = ap.parse_args()
    task = build_task("locomo", default_data_root()).select(None, args.conversations)
    docs = [d for ds in task.scenes.values() for d in ds]
    infers = {"both": [True, False], "on": [True], "off": [False]}[args.infer]
    rows = []
    for infer in infers:
        for batch in (int(b) for b in args.batches.split(",")):
            with tempfile.TemporaryDirectory(prefix="memsvc-rate-") as folder:
                row = run(docs, batch, infer, Path(folder))
            rows.append(row)
            print(json.dumps(row), flush=True)
    defer = os.environ.get("MEMSVC_OUTBOX__DEFER_GRAPH", "false")
    print(f"\nLoCoMo turns: {len(docs)}; graph deferred: {defer}; {os.cpu_count()} cores")
    print("| infer | batch | ack turns/s | indexed turns/s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['infer']} | {r['batch']} | {r['ack_turns_per_s']} | {r['indexed_turns_per_s']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"defer_graph": defer, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
