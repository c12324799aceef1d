"""The merge and profile jobs at scale: one user scope with N derived (semantic) memories, after a restart.

    MEMSVC_JOBS__KIND=inprocess MEMSVC_JOBS__WORKERS=0 python benchmarks/merge.py --sizes 5000,20000 --cache eval-out/scale-cache

The scope is filled through the bulk path of `scale.py` (its generated notes and cached vectors), as
semantic memories. A new process then runs the merge job twice: first on the whole scope (nothing
compared yet), then after `--new` more memories arrive, a tenth of them near-copies of old ones.
Prints seconds and the process's peak RSS per run; the second run is what every digest's merge job
costs once a scope is large. Then the profile job, twice (it builds the profile, then finds it
unchanged): every memory is a fact of a profile skill with its own importance, the worst case for it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scale import T0, TENANT, USER, embeddings, note  # noqa: E402

from memsvc.config import Settings  # noqa: E402
from memsvc.indexer import payload_of  # noqa: E402
from memsvc.memory_os import MemoryOS  # noqa: E402
from memsvc.models import MemoryCube, MemoryType, utcnow  # noqa: E402
from memsvc.ports import VectorPoint  # noqa: E402
from storage.registry import build_memory_os  # noqa: E402


def put(os_: MemoryOS, texts: list[str], vecs: list[list[float]], first: int, now: bool) -> None:
    for lo in range(0, len(texts), 2000):
        cubes = []
        for k in range(lo, min(lo + 2000, len(texts))):
            when = utcnow() if now else T0 + timedelta(minutes=11 * (first + k))
            cubes.append(MemoryCube(tenant=TENANT, user_id=USER, type=MemoryType.SEMANTIC, content=texts[k],
                                    created_at=when, updated_at=when, importance=(first + k) * 7919 % 10007 / 10007,
                                    embedding_model=os_.embedder.model_name, written_by="capture-personal-facts"))
        with os_.records.unit_of_work() as uow:
            uow.touch_scope(TENANT, USER)
            uow.insert_memories(cubes)
        os_.vectors.upsert([VectorPoint(c.id, v, c.content, payload_of(c))
                            for c, v in zip(cubes, vecs[lo:lo + 2000], strict=True)])


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000")
    ap.add_argument("--new", type=int, default=50)
    ap.add_argument("--cache", type=Path, default=Path("eval-out/scale-cache"))
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    texts = [note(rng) for _ in range(sizes[-1])]
    for size in sizes:
        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="memsvc-merge-")))
        os_ = build_memory_os(settings)
        vecs = embeddings(os_, texts[:size], args.cache / f"seed{args.seed}", 0)
        put(os_, texts[:size], vecs.tolist(), 0, now=False)
        optimize = getattr(os_.vectors, "optimize", None)
        if optimize is not None:
            optimize()
        os_.close()
        os_ = build_memory_os(settings)  # a restart: the writer's cache of fresh vectors is empty
        try:
            row: dict[str, float | int] = {"memories": size, "rss_mb_before": peak_mb()}
            t = time.perf_counter()
            first = os_.lifecycle.merge_scope(TENANT, USER)
            row.update(first_s=round(time.perf_counter() - t, 2), first_merged=first["merged"], rss_mb_first=peak_mb())
            nrng = random.Random(size)
            new = [note(nrng) for _ in range(args.new)]
            for i in range(0, args.new, 10):  # a tenth restate an old memory
                new[i] = texts[nrng.randrange(size)] + "!"
            put(os_, new, os_.embedder.embed(new).tolist(), size, now=True)
            t = time.perf_counter()
            second = os_.lifecycle.merge_scope(TENANT, USER)
            row.update(second_s=round(time.perf_counter() - t, 2), second_merged=second["merged"],
                       rss_mb_second=peak_mb())
            for run in ("profile_s", "profile_again_s"):
                t = time.perf_counter()
                os_.lifecycle.profile_scope(TENANT, USER)
                row[run] = round(time.perf_counter() - t, 3)
            row["rss_mb_profile"] = peak_mb()
        finally:
            os_.close()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
