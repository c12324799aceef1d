"""Recall latency, stage by stage, at 1k … 1M memories in one user scope; disk, RSS and start-up.

    python benchmarks/scale.py --sizes 1000,10000,100000 --out eval-out/bench-scale.json
    python benchmarks/scale.py --sizes 1000000 --records postgresql        # PostgreSQL records

The scope is filled through a bulk path, not the write pipeline (which would take hours at 1M):
generated first-person notes (varied templates and slots), embedded by the service's own embedder in
large batches (vectors cached under `--cache`, so a rerun skips the embedding), stored as episodic
memories with their messages through the record store's unit of work, and upserted into the vector
index, then optimised. No graph is built (the default preset does not read it). Searches then go
through `MemoryOS.search` with the default preset, exactly as the REST API calls it; each stage is
also timed on its own (query embedding, dense, BM25, the SQL load of a top-10 search and of the whole pool) on the same queries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from memsvc.config import PostgresRecords, Settings
from memsvc.indexer import payload_of
from memsvc.memory_os import MemoryOS
from memsvc.models import EPISODE_KEY, TURN_KEY, MemoryCube, MemoryType, Role, StoredMessage
from memsvc.ports import VectorPoint
from memsvc.read import LOAD_SLACK
from memsvc.schemas import SearchRequest
from storage.registry import build_memory_os

TENANT, USER = "bench", "sam"
NAMES = ["Alice", "Bob", "Carmen", "Dmitri", "Esha", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
         "Mateo", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko", "Uma", "Viktor", "Wen", "Yara"]
PLACES = ["Berlin", "Lisbon", "Osaka", "Nairobi", "Lima", "Oslo", "Toronto", "Hanoi", "Seville", "Krakow", "Austin",
          "Perth", "Quito", "Tbilisi", "Valencia", "Accra", "Bergen", "Cusco", "Durban", "Izmir", "Leeds", "Porto"]
THINGS = ["ramen", "tacos", "paella", "pierogi", "sushi", "falafel", "curry", "pho", "lasagna", "dumplings",
          "a vintage camera", "a road bike", "a sourdough starter", "a telescope", "a kayak", "a sewing machine"]
ACTS = ["hiking", "painting", "chess", "climbing", "baking", "cycling", "pottery", "sailing", "running", "knitting",
        "birdwatching", "salsa", "woodworking", "archery", "surfing", "choir", "gardening", "fencing"]
FEEL = ["loved", "did not enjoy", "was surprised by", "keep thinking about", "want to repeat", "laughed about"]
WHEN = ["last weekend", "on Tuesday", "in March", "two weeks ago", "yesterday", "over the holidays", "this morning"]
TEMPLATES = [
    "I went {act} near {place} with {name} {when} and {feel} it.",
    "{name} recommended {thing} from a shop in {place}; I {feel} the idea.",
    "I have been practising {act} for {n} months; {name} says I improved a lot.",
    "{name} told me the {thing} in {place} was the best they ever had.",
    "We are planning a trip to {place} in {n} weeks, maybe with {name}.",
    "My {rel} {name} moved to {place} {when} for a job in {field}.",
    "The {act} class moved to {day} at {n} pm, {name} will drive.",
    "I finished a book about the history of {place} and {feel} the ending.",
    "Remind me to call {name} about the {act} club before {day}.",
    "{when} I bought {thing} and showed it to {name}.",
    "{name} and I argued about {field} over {thing} in {place}.",
    "I signed up for a {act} workshop in {place} that {name} organises.",
]
RELS = ["sister", "brother", "cousin", "friend", "colleague", "neighbour", "aunt", "uncle"]
FIELDS = ["nursing", "software", "architecture", "teaching", "law", "biology", "music", "finance", "journalism"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
QUERIES = ["Where does my sister live?", "Who recommended the ramen place?", "When is the pottery class?",
           "What did Greta say about the tacos?", "Which trip are we planning?", "How long have I been climbing?",
           "What did I buy in March?", "Who works in architecture?", "What book did I finish?",
           "Which workshop did I sign up for?", "Who will drive to the salsa class?", "What happened in Lisbon?"]
T0 = datetime(2020, 1, 1, tzinfo=UTC)
WRITTEN = datetime(2025, 1, 1, tzinfo=UTC)  # the bulk memories' write times start here (1M seconds: 12 days)


def note(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(
        act=rng.choice(ACTS), place=rng.choice(PLACES), name=rng.choice(NAMES), thing=rng.choice(THINGS),
        feel=rng.choice(FEEL), when=rng.choice(WHEN), n=rng.randint(2, 30), rel=rng.choice(RELS),
        field=rng.choice(FIELDS), day=rng.choice(DAYS),
    )


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


CHUNK = 4096
EPISODE_TURNS = 20  # the bulk notes' episodes (the write path cuts them by gaps and surprise)


def embeddings(os_: MemoryOS, texts: list[str], cache: Path, start: int) -> np.ndarray:
    """Vectors of texts[start:], from a cache of float16 chunks of `CHUNK` texts (resumable: an
    interrupted run keeps the chunks it finished; `--prepare` fills it ahead of a run)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for lo in range(start - start % CHUNK, len(texts), CHUNK):
        path = cache / f"chunk-{lo // CHUNK:05d}.npy"
        hi = min(lo + CHUNK, len(texts))
        vecs = np.load(path) if path.exists() else None
        if vecs is None or len(vecs) < hi - lo:
            vecs = os_.embedder.embed(texts[lo:lo + CHUNK]).astype(np.float16)
            np.save(path, vecs)
            print(f"  embedded {lo + len(vecs):,}/{len(texts):,}", flush=True)
        out.append(vecs[max(0, start - lo):hi - lo])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, os_.embedder.dim), np.float32)


def fill(os_: MemoryOS, texts: list[str], vecs: np.ndarray, start: int) -> float:
    began = time.perf_counter()
    for lo in range(0, len(vecs), 2000):
        cubes, msgs = [], []
        for k in range(start + lo, start + lo + len(vecs[lo:lo + 2000])):
            when = T0 + timedelta(minutes=11 * k)
            msgs.append(StoredMessage(tenant=TENANT, user_id=USER, id=f"m{k}", role=Role.USER, content=texts[k],
                                      timestamp=when))
            cubes.append(MemoryCube(tenant=TENANT, user_id=USER, type=MemoryType.EPISODIC, content=texts[k],
                                    source_ids=[f"m{k}"], event_time=when, valid_from=when, importance=0.5,
                                    # written a second apart, in the past (event times run 11 minutes apart,
                                    # into the future at 1M: a write time may not)
                                    created_at=WRITTEN + timedelta(seconds=k), updated_at=WRITTEN + timedelta(seconds=k),
                                    embedding_model=os_.embedder.model_name, written_by="bench-bulk",
                                    metadata={EPISODE_KEY: k // EPISODE_TURNS, TURN_KEY: k}))
        with os_.records.unit_of_work() as uow:
            uow.add_messages(msgs)
            uow.insert_memories(cubes)
        os_.vectors.upsert([VectorPoint(cu.id, v.tolist(), cu.content, payload_of(cu))
                            for cu, v in zip(cubes, vecs[lo:lo + 2000], strict=True)])
    optimize = getattr(os_.vectors, "optimize", None)
    if optimize is not None:
        optimize()
    return time.perf_counter() - began


def measure_presets(os_: MemoryOS, queries: list[str], presets: list[str]) -> dict[str, Any]:
    """Search p50 / p95 of other presets on the same queries (e.g. `hybrid_neighbours`, whose
    temporal-neighbour expansion looks turns up by their position in the stream)."""
    row: dict[str, Any] = {}
    for preset in presets:
        times = []
        for q in queries:
            t = time.perf_counter()
            os_.search(TENANT, SearchRequest(user_id=USER, query=q, top_k=10, preset=preset))
            times.append((time.perf_counter() - t) * 1000)
        row[f"{preset}_p50_ms"], row[f"{preset}_p95_ms"] = round(pct(times, 50), 1), round(pct(times, 95), 1)
    return row


def measure(os_: MemoryOS, queries: list[str]) -> dict[str, Any]:
    from memsvc.models import MemoryStatus
    from memsvc.ports import VectorFilter

    total, stages = [], {"embed": [], "dense": [], "bm25": [], "sql_load": [], "sql_pool": []}
    flt = VectorFilter(tenant=TENANT, user_id=USER, statuses=[MemoryStatus.ACTIVE])
    n = os_.settings.search.candidates
    for q in queries:
        t = time.perf_counter()
        os_.search(TENANT, SearchRequest(user_id=USER, query=q, top_k=10))
        total.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        vec = os_.embedder.embed_query(q).tolist()
        t1 = time.perf_counter()
        dense = os_.vectors.search(vec, flt, n)
        t2 = time.perf_counter()
        kw = os_.vectors.search_text(q, flt, n)
        t3 = time.perf_counter()
        pool = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in kw]))
        os_.records.get_memories(TENANT, pool[:10 + LOAD_SLACK])  # what a top_k=10 search loads
        t4 = time.perf_counter()
        os_.records.get_memories(TENANT, pool[:n])  # the whole pool (what a reranking preset loads)
        t5 = time.perf_counter()
        for name, a, b in (("embed", t, t1), ("dense", t1, t2), ("bm25", t2, t3), ("sql_load", t3, t4),
                           ("sql_pool", t4, t5)):
            stages[name].append((b - a) * 1000)
    row: dict[str, Any] = {"search_p50_ms": round(pct(total, 50), 1), "search_p95_ms": round(pct(total, 95), 1),
                           "search_mean_ms": round(statistics.fmean(total), 1)}
    for name, vals in stages.items():
        row[f"{name}_p50_ms"] = round(pct(vals, 50), 1)
        row[f"{name}_p95_ms"] = round(pct(vals, 95), 1)
    return row


def du(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # with -wal / -shm
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--records", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--db", default="postgresql+psycopg://root@127.0.0.1:5432/test", help="with --records postgresql")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path("eval-out/scale-cache"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-scale.json"))
    ap.add_argument("--presets", default="", help="comma-separated presets timed beside the default, e.g. "
                    "hybrid_neighbours")
    ap.add_argument("--prepare", action="store_true", help="only embed the notes of the largest size into the cache")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(args.seed)
    texts = [note(rng) for _ in range(sizes[-1])]
    qrng = random.Random(args.seed + 1)
    queries = [qrng.choice(QUERIES) for _ in range(args.queries)]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="memsvc-scale-"))
    settings = Settings(data_dir=data_dir)
    if args.records == "postgresql":
        from sqlalchemy import create_engine, text

        engine = create_engine(args.db)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        settings = settings.model_copy(update={"records": PostgresRecords(url=args.db)})
    os_ = build_memory_os(settings)
    if args.prepare:
        embeddings(os_, texts, args.cache / f"seed{args.seed}", 0)
        os_.close()
        return
    rows, filled = [], 0
    try:
        for size in sizes:
            vecs = embeddings(os_, texts[:size], args.cache / f"seed{args.seed}", filled)
            seconds = fill(os_, texts, vecs, filled)
            filled = size
            os_.search(TENANT, SearchRequest(user_id=USER, query="warm up", top_k=10))
            row = {"memories": size, "bulk_fill_s": round(seconds, 1), **measure(os_, queries),
                   **measure_presets(os_, queries, [p for p in args.presets.split(",") if p])}
            os_.vectors.flush()
            row["sqlite_bytes_per_memory"] = round(du(data_dir / "memsvc.db") / size) if args.records == "sqlite" else None
            row["vector_bytes_per_memory"] = round(du(data_dir / "vectors") / size)
            row["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        os_.close()
    t = time.perf_counter()
    again = build_memory_os(settings)  # start-up on the filled data directory
    startup = time.perf_counter() - t
    again.close()
    cols = ["memories", "search_p50_ms", "search_p95_ms", "embed_p95_ms", "dense_p95_ms", "bm25_p95_ms",
            "sql_load_p95_ms", "sql_pool_p95_ms", "vector_bytes_per_memory", "sqlite_bytes_per_memory", "rss_mb"]
    print(f"\nrecords: {args.records}; start-up with {sizes[-1]:,} memories: {startup:.1f} s "
          f"(pid {os.getpid()}, {os.cpu_count()} cores)")
    print("| " + " | ".join(cols) + " |\n|" + "---:|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"records": args.records, "startup_s": round(startup, 1), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
