"""Write throughput and recall latency of the embedded defaults at growing sizes in one user scope.

    python benchmarks/write_recall.py --sizes 10000,100000 --out bench-write-recall.json

Prints a table and writes JSON. Messages are synthetic but varied (names, places, foods,
activities, dates), written in batches like an agent would, through `MemoryOS` (the same
code path as the REST API).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memsvc.config import Settings
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from storage.registry import build_memory_os

NAMES = ["Alice", "Bob", "Carmen", "Dmitri", "Esha", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]
PLACES = ["Berlin", "Lisbon", "Osaka", "Nairobi", "Lima", "Oslo", "Toronto", "Hanoi", "Seville", "Krakow", "Austin", "Perth"]
FOODS = ["ramen", "tacos", "paella", "pierogi", "sushi", "falafel", "curry", "pho", "lasagna", "dumplings"]
ACTS = ["hiking", "painting", "chess", "climbing", "baking", "cycling", "pottery", "sailing", "running", "knitting"]
TEMPLATES = [
    "I went {act} near {place} with {name} on the weekend.",
    "My friend {name} recommended a {food} place in {place}.",
    "I have been learning {act} for {n} months now.",
    "{name} told me the {food} in {place} was the best they ever had.",
    "We are planning a trip to {place} in {n} weeks.",
    "I love {food} but {name} prefers {food2}.",
    "The {act} class moved to Tuesday at {n} pm.",
    "My sister lives in {place} and works as a nurse.",
    "Remind me to call {name} about the {act} club.",
    "I finished a book about the history of {place}.",
]


def message(rng: random.Random, i: int, t0: datetime) -> MessageIn:
    text = rng.choice(TEMPLATES).format(
        act=rng.choice(ACTS), place=rng.choice(PLACES), name=rng.choice(NAMES), food=rng.choice(FOODS),
        food2=rng.choice(FOODS), n=rng.randint(2, 12),
    )
    return MessageIn(id=f"m{i}", role="user", name="Sam", content=text, timestamp=t0 + timedelta(minutes=7 * i))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-infer", action="store_true", help="episodic only (no extraction)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-write-recall.json"))
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(7)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="memsvc-bench-"))
    os_ = build_memory_os(Settings(data_dir=data_dir))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    written_msgs = written_mems = 0
    write_seconds = 0.0
    try:
        for size in sizes:
            while written_msgs < size:
                n = min(args.batch, size - written_msgs)
                req = WriteRequest(user_id="sam", infer=not args.no_infer,
                                   messages=[message(rng, written_msgs + k, t0) for k in range(n)])
                start = time.perf_counter()
                res = os_.add("bench", req)
                write_seconds += time.perf_counter() - start
                written_msgs += n
                written_mems += len(res.written)
                if written_msgs % 5000 == 0:
                    print(f"  wrote {written_msgs} messages ({written_msgs / write_seconds:.0f} msg/s)", flush=True)
            queries = [
                rng.choice(["Where does my sister live?", f"Who likes {rng.choice(FOODS)}?",
                            f"trip to {rng.choice(PLACES)}", f"When is the {rng.choice(ACTS)} class?",
                            f"What did {rng.choice(NAMES)} recommend?"])
                for _ in range(args.queries)
            ]
            lat = []
            for q in queries:
                start = time.perf_counter()
                os_.search("bench", SearchRequest(user_id="sam", query=q, top_k=10))
                lat.append((time.perf_counter() - start) * 1000)
            row = {
                "messages": written_msgs, "memories": written_mems,
                "write_msgs_per_s": round(written_msgs / write_seconds, 1),
                "write_memories_per_s": round(written_mems / write_seconds, 1),
                "search_p50_ms": round(pct(lat, 50), 1), "search_p95_ms": round(pct(lat, 95), 1),
                "search_mean_ms": round(statistics.fmean(lat), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        os_.close()
    header = "| messages | memories | write msg/s | write memories/s | search p50 ms | search p95 ms |"
    print("\n" + header + "\n|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['messages']} | {r['memories']} | {r['write_msgs_per_s']} | {r['write_memories_per_s']} | "
              f"{r['search_p50_ms']} | {r['search_p95_ms']} |")
    args.out.write_text(json.dumps({"infer": not args.no_infer, "batch": args.batch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
