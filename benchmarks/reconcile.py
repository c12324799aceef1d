"""Reconciliation at scale: a full pass, then the periodic pass over what changed, on a filled scope.

    python benchmarks/scale.py --sizes 1000000 --data-dir /tmp/scale-1m        # fills the directory
    MEMSVC_JOBS__KIND=inprocess MEMSVC_JOBS__WORKERS=0 python benchmarks/reconcile.py --data-dir /tmp/scale-1m

Opens the data directory (a restart), runs a full pass (`reconcile(full=True)`: every point and every
memory), then archives `--changes` memories through `MemoryOS.update` (as `PATCH /v1/memories/{id}`
does; their points follow through the outbox), drops the point of a tenth of them behind the
outbox's back (drift a change marks), and runs the periodic pass, which reads only the memories
changed since the full one. Prints seconds, memories and points read, and repairs of each pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from memsvc.config import Settings
from memsvc.models import MemoryStatus
from memsvc.ports import MemoryQuery
from memsvc.schemas import MemoryPatch
from storage.registry import build_memory_os

TENANT, USER = "bench", "sam"  # benchmarks/scale.py's scope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-reconcile.json"))
    args = ap.parse_args()
    os_ = build_memory_os(Settings(data_dir=args.data_dir))
    rows = []
    try:
        t = time.perf_counter()
        full = os_.reconciler.reconcile(full=True)
        rows.append({"pass": "full", "seconds": round(time.perf_counter() - t, 2), **full.as_dict()})
        print(json.dumps(rows[-1]), flush=True)
        page = os_.records.list_memories(TENANT, MemoryQuery(user_id=USER, statuses=[MemoryStatus.ACTIVE],
                                                             limit=args.changes))
        ids = [c.id for c in page.items]
        for memory_id in ids:
            os_.update(TENANT, memory_id, MemoryPatch(status=MemoryStatus.ARCHIVED))
        os_.vectors.delete(ids[::10])
        t = time.perf_counter()
        changed = os_.reconciler.reconcile()
        rows.append({"pass": "changed", "changes": len(ids), "seconds": round(time.perf_counter() - t, 2),
                     **changed.as_dict()})
        print(json.dumps(rows[-1]), flush=True)
    finally:
        os_.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
