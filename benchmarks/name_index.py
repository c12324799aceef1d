"""The graph's entity-name index after it left the in-process cache: the next write's time.

    python benchmarks/name_index.py [--conversations 1] [--out eval-out/bench-name-index.json]

LoCoMo's development conversations are written (infer on, batches of 50) into one user scope through
`MemoryOS.add`; then the graph service's in-process name indexes are dropped, as a restart or 64
other active scopes would drop them, and one more write is timed (its new entity names are linked to
the scope's names, so the scope's index is rebuilt first), then one write with the index in place.
With `name_vectors` (the default) the rebuild reads the scope's stored name vectors; with
`--no-store` it embeds every name again, as before migration 0012. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evals.datasets.base import default_data_root
from evals.runner import to_message, write_batches
from evals.tasks import build_task
from memsvc.config import Settings
from memsvc.schemas import MessageIn, WriteRequest
from storage.registry import build_memory_os

NEXT = [("Caroline", "I adopted a puppy named Biscuit in Denver."), ("Caroline", "Biscuit loves the park near Union Station.")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--no-store", action="store_true", help="rebuild by embedding every name (no name_vectors)")
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-name-index.json"))
    args = ap.parse_args()
    task = build_task("locomo", default_data_root()).select(None, args.conversations)
    docs = [d for ds in task.scenes.values() for d in ds]
    with tempfile.TemporaryDirectory(prefix="memsvc-names-") as folder:
        os_ = build_memory_os(Settings(data_dir=Path(folder)), start=False)
        try:
            for b in write_batches(docs, 50):
                os_.add("bench", WriteRequest(user_id="u", session_id=b[0].session, infer=True,
                                              messages=[to_message(d) for d in b]))
            service = os_.indexer.graph_prefetch.__self__  # type: ignore[union-attr]
            if args.no_store:
                service.name_vectors = None
            assert os_.graph is not None
            entities = len(os_.graph.catalog("bench", "u").entity_ids)
            service._names_by_scope.clear()  # a restart, or 64 other scopes since
            times = []
            for name, text in NEXT:
                start = time.perf_counter()
                os_.add("bench", WriteRequest(user_id="u", infer=True,
                                              messages=[MessageIn(role="user", name=name, content=text)]))
                times.append(round(time.perf_counter() - start, 3))
        finally:
            os_.close()
    row = {"turns": len(docs), "entities": entities, "name_vectors": not args.no_store,
           "write_after_eviction_s": times[0], "next_write_s": times[1]}
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
