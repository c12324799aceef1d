"""Write throughput with infer (turns/s) per skill controller, on LoCoMo conversations.

    python benchmarks/skills_write.py [--conversations 1] [--out eval-out/skills-write.json]

Each controller writes the same conversations into a fresh data directory through `MemoryOS.add`
(session by session, as `memsvc eval` writes them): `episodic only` (no span reaches the
controller), `heuristic` (the card triggers), `learned` (the packaged policy) and `all` (every skill
on every span). Prints a table and writes JSON. Timings on a shared machine drift: the controllers
run one after the other in one process, `--repeats` times, and the table keeps each one's fastest run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evals.datasets.base import default_data_root
from evals.runner import write_batches
from evals.tasks import build_task
from memsvc.config import Settings, SkillsConfig
from memsvc.models import Role
from memsvc.schemas import MessageIn, WriteRequest
from storage.registry import build_memory_os

CONTROLLERS = {
    "episodic only": SkillsConfig(gate_threshold=1.0),
    "heuristic": SkillsConfig(controller="heuristic"),
    "learned": SkillsConfig(controller="learned"),
    "all": SkillsConfig(controller="all"),
}


def run(name: str, docs: list, folder: Path) -> dict[str, float]:  # type: ignore[type-arg]
    os_ = build_memory_os(Settings(data_dir=folder, skills=CONTROLLERS[name]))
    try:
        start = time.perf_counter()
        written = 0
        for batch in write_batches(docs, 100):
            req = WriteRequest(user_id="bench", session_id=batch[0].session, messages=[
                MessageIn(id=d.id, role=Role(d.role), name=d.speaker, content=d.content, timestamp=d.timestamp)
                for d in batch])
            written += len(os_.add("bench", req).written)
        seconds = time.perf_counter() - start
    finally:
        os_.close()
    return {"turns": len(docs), "seconds": round(seconds, 2), "turns_per_s": round(len(docs) / seconds, 2),
            "memories": written, "derived": written - len(docs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("eval-out/skills-write.json"))
    ap.add_argument("--repeats", type=int, default=2, help="runs per controller; the fastest is kept")
    args = ap.parse_args()
    task = build_task("locomo", default_data_root()).select(None, args.conversations)
    docs = [d for ds in task.scenes.values() for d in ds]
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name in CONTROLLERS:
            with tempfile.TemporaryDirectory(prefix="memsvc-bench-") as folder:
                r = run(name, docs, Path(folder))
            if name not in results or r["seconds"] < results[name]["seconds"]:
                results[name] = r
    print("| controller | turns | memories (derived) | seconds | turns/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['turns']} | {r['memories']} ({r['derived']}) | {r['seconds']:.1f} | {r['turns_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"conversations": args.conversations, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
