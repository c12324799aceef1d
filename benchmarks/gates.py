"""Cost of the learned read gate: rerank-stage latency against depth, and search end to end.

    python benchmarks/gates.py --memories 10000 --depths 50,100,200 --out bench-gates.json

One user scope filled with `--memories` synthetic turns (the generator of
`benchmarks/write_recall.py`, `infer: false`), then `--queries` searches per preset. The rerank stage
is timed in its parts, one after the other: the features (one id-restricted dense search + lexical signals, and the
second embedder's cosines: the query's e5 row — projected from its MiniLM embedding by the
artefact's `second` head, or embedded with e5 where the artefact has none — and the candidates'
stored rows, of which `second` is its own column) and the heads' forward pass; the scope is written with
`--second-rows on` by default (the indexer stores every memory's e5 row, as where a rerank preset is
the default). "after retrievers" times the stage as a search runs it: the e5 query pass starts beside
the retrievers (on its own thread; on the main thread, with torch held to one thread, the engine runs
on one core), and the stage adds what follows them — the whole pool loaded from SQL, the wait for
that row, the features, the forward pass; "e5 row ready" times it again with that row awaited
before the clock starts (the SQL load, the features and the forward pass alone). "search" is `MemoryOS.search` end to end (embedding, retrievers, SQL load,
rerank, packing, recall log), with the process's CPU time per search (every thread's: work a search
runs beside its own, such as an e5 query pass, costs a busy node even when it does not add latency).
`--heap-searches N` adds N reranked searches with the start-up heap back in the garbage collector's
walks, then N with it frozen as a server's start-up leaves it (`api.app.settle_heap`): the latency's
tail and each full collection's duration. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from write_recall import (  # benchmarks/ is the script folder, first on sys.path
    ACTS,
    NAMES,
    PLACES,
    message,
    pct,
)

from api.app import settle_heap
from memsvc.config import SearchConfig, Settings
from memsvc.memory_os import MemoryOS
from memsvc.schemas import SearchRequest, WriteRequest
from storage.registry import build_memory_os

PRESETS = ("hybrid", "hybrid_rerank", "hybrid_temporal", "hybrid_temporal_rerank", "hybrid_temporal_cross",
           "hybrid_temporal_adapted", "hybrid_ppr", "hybrid_ppr_rerank")
MONTHS = ("January", "February")  # the synthetic turns are 7 minutes apart from 2024-01-01: 10k span Jan-Feb


def heap_rows(os_: MemoryOS, queries: list[str], n: int) -> list[dict[str, object]]:
    """`n` `hybrid_temporal_rerank` searches with the start-up heap back in the collector's walks
    (`gc.unfreeze`), then `n` with it frozen again (`settle_heap`, as a server runs): the latency's
    tail and every full (generation 2) collection that ran meanwhile, with its duration."""
    full: list[float] = []
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                full.append((time.perf_counter() - started[0]) * 1000)

    out: list[dict[str, object]] = []
    gc.callbacks.append(watch)
    try:
        for frozen in (False, True):
            gc.unfreeze()
            if frozen:
                settle_heap()
            full.clear()
            lat = []
            for i in range(n):
                t = time.perf_counter()
                os_.search("bench", SearchRequest(user_id="u", query=queries[i % len(queries)], top_k=10,
                                                  preset="hybrid_temporal_rerank"))
                lat.append((time.perf_counter() - t) * 1000)
            spans = f"{min(full):.1f}-{max(full):.1f}" if full else "-"
            out.append({"what": f"{n} searches, start-up heap {'frozen' if frozen else 'not frozen'}",
                        "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
                        "p99_ms": round(pct(lat, 99), 1), "max_ms": round(max(lat), 1),
                        "full_collections": len(full), "full_collection_ms": spans})
    finally:
        gc.callbacks.remove(watch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--memories", type=int, default=10_000)
    ap.add_argument("--depths", default="50,100,200")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cross-depths", default="10,30", help="the cross-encoder stage's depths measured (its artefact loaded)")
    ap.add_argument("--out", type=Path, default=Path("bench-gates.json"))
    ap.add_argument("--heap-searches", type=int, default=0,
                    help="also time this many hybrid_temporal_rerank searches with the start-up heap not "
                         "frozen, then frozen (`settle_heap`), and count the full collections (0: skip)")
    ap.add_argument("--second-rows", choices=("auto", "on", "off"), default="on",
                    help="MEMSVC_SEARCH__SECOND_ROWS while the scope is written")
    args = ap.parse_args()
    rng = random.Random(7)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    # half ask where/when/with whom, a quarter who recommended what, a quarter name a month (so the
    # `temporal` presets search the period too)
    queries = [f"{rng.choice(['Where', 'When', 'With whom'])} did Sam go {rng.choice(ACTS)} near "
               f"{rng.choice(PLACES)}?" if i % 2 else f"What did {rng.choice(NAMES)} recommend?" if i % 4 == 0
               else f"Where did Sam go {rng.choice(ACTS)} in {rng.choice(MONTHS)} 2024?"
               for i in range(args.queries)]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="memsvc-bench-gates-") as folder:
        os_ = build_memory_os(Settings(data_dir=Path(folder), search=SearchConfig(second_rows=args.second_rows)))
        try:
            assert os_.gate is not None, "no gate artefact loaded"
            start = time.perf_counter()
            for b in range(0, args.memories, 100):
                msgs = [message(rng, i, t0) for i in range(b, min(args.memories, b + 100))]
                os_.add("bench", WriteRequest(user_id="u", messages=msgs, infer=False))
            write_s = time.perf_counter() - start
            os_.vectors.flush()
            settle_heap()  # as a server's start-up does (`api.app.settle_heap`)
            reader = os_.reader
            for depth in (int(d) for d in args.depths.split(",")):
                reader.config = SearchConfig(**{**reader.config.model_dump(), "rerank_depth": depth})
                feats, fwd, second = [], [], []
                for q in queries:
                    req = SearchRequest(user_id="u", query=q, top_k=10, preset="hybrid_temporal_rerank")
                    cset = reader.candidates("bench", req)
                    assert cset is not None and cset.features is not None
                    flt = reader.filter_for("bench", req)
                    assert flt is not None
                    qvec = os_.embedder.embed_query(q).tolist()  # computed once per search anyway
                    window = reader._window("bench", req) is not None  # found by the retrieval stage
                    t = time.perf_counter()
                    seconds = reader._second("bench", req, cset.candidates, qvec)
                    second.append((time.perf_counter() - t) * 1000)
                    reader._features(q, cset.candidates,
                                     reader._cosines(qvec, flt, cset.candidates, reader._adapt(qvec)),
                                     window=window, seconds=seconds)
                    feats.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    reader.rank(cset)
                    fwd.append((time.perf_counter() - t) * 1000)
                total = [a + b for a, b in zip(feats, fwd, strict=True)]
                rows.append({"what": f"rerank stage, depth {depth}", "p50_ms": round(pct(total, 50), 2),
                             "p95_ms": round(pct(total, 95), 2), "features_p50_ms": round(pct(feats, 50), 2),
                             "forward_p50_ms": round(pct(fwd, 50), 2), "second_p50_ms": round(pct(second, 50), 2)})
                # The same stage as a search runs it: the query's e5 row (where the artefact has no
                # projection) is embedded on a thread of its own while the retrievers run, so what the
                # stage adds to a search is what follows the retrievers: loading the whole pool from
                # SQL, waiting for that row, the features and the forward pass.
                after = []
                for q in queries:
                    req = SearchRequest(user_id="u", query=q, top_k=10, preset="hybrid_temporal_rerank")
                    found = reader._retrieve("bench", req)
                    assert found is not None
                    t = time.perf_counter()
                    reader.rank(reader._complete("bench", req, found))
                    after.append((time.perf_counter() - t) * 1000)
                rows.append({"what": f"rerank stage after retrievers, {depth}", "p50_ms": round(pct(after, 50), 2),
                             "p95_ms": round(pct(after, 95), 2)})
                # The same with the e5 row awaited before the clock starts: the pool's SQL load, the
                # features and the forward pass alone (what the service's own code spends).
                ready = []
                for q in queries:
                    req = SearchRequest(user_id="u", query=q, top_k=10, preset="hybrid_temporal_rerank")
                    found = reader._retrieve("bench", req)
                    assert found is not None
                    if found.second_query is not None:
                        found.second_query.result()
                    t = time.perf_counter()
                    reader.rank(reader._complete("bench", req, found))
                    ready.append((time.perf_counter() - t) * 1000)
                rows.append({"what": f"  the same, e5 row ready, {depth}", "p50_ms": round(pct(ready, 50), 2),
                             "p95_ms": round(pct(ready, 95), 2)})
            reader.config = SearchConfig(**{**reader.config.model_dump(), "rerank_depth": 200})
            for depth in (int(d) for d in args.cross_depths.split(",") if d) if reader.crosser is not None else ():
                reader.config = SearchConfig(**{**reader.config.model_dump(), "cross_depth": depth})
                lat = []
                for q in queries:
                    cset = reader.candidates("bench", SearchRequest(user_id="u", query=q, top_k=10,
                                                                    preset="hybrid_temporal_cross"))
                    assert cset is not None and cset.features is not None
                    t = time.perf_counter()
                    reader.rank(cset)  # the read gate's forward pass (~2 ms, above) and the cross stage
                    lat.append((time.perf_counter() - t) * 1000)
                rows.append({"what": f"rerank + cross stage, cross depth {depth}", "p50_ms": round(pct(lat, 50), 2),
                             "p95_ms": round(pct(lat, 95), 2)})
            reader.config = SearchConfig(**{**reader.config.model_dump(), "cross_depth": 30})
            for preset in PRESETS:
                lat = []
                cpu = time.process_time()  # every thread of the process: what a search costs a loaded node
                for q in queries:
                    t = time.perf_counter()
                    os_.search("bench", SearchRequest(user_id="u", query=q, top_k=10, preset=preset))
                    lat.append((time.perf_counter() - t) * 1000)
                rows.append({"what": f"search {preset}", "p50_ms": round(pct(lat, 50), 2), "p95_ms": round(pct(lat, 95), 2),
                             "cpu_ms": round((time.process_time() - cpu) * 1000 / len(queries), 2)})
            if args.heap_searches:
                rows += heap_rows(os_, queries, args.heap_searches)
        finally:
            os_.close()
    print(f"{args.memories} memories in one scope, written in {write_s:.0f} s; {args.queries} queries")
    print(f"| {'what':34s} | p50 ms | p95 ms | features p50 | of which second | forward p50 | CPU ms a search |")
    for r in rows:
        if "full_collections" in r:
            continue
        print(f"| {r['what']:34s} | {r['p50_ms']:6} | {r['p95_ms']:6} | {r.get('features_p50_ms', ''):12} | "
              f"{r.get('second_p50_ms', ''):15} | {r.get('forward_p50_ms', ''):11} | {r.get('cpu_ms', ''):15} |")
    for r in rows:
        if "full_collections" in r:
            print(f"{r['what']}: p50 / p95 / p99 / max {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} / {r['max_ms']} ms; "
                  f"{r['full_collections']} full collections, {r['full_collection_ms']} ms each (min-max)")
    args.out.write_text(json.dumps({"memories": args.memories, "queries": args.queries, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
