"""The job queue through Redis: jobs per second with N `memsvc worker` processes, and what a
SIGKILL of one worker in the middle of a job does.

    python benchmarks/jobs.py --workers 2 --jobs 200 --messages 1            # throughput
    python benchmarks/jobs.py --workers 2 --jobs 60 --messages 10 --kill     # a worker killed mid-job

The script plays the API node: it stores `wait: false` write jobs and queues them (as
`MemoryOS.submit` does, through a `JobRunner` with no worker threads); `--workers` separate
`memsvc worker` processes consume the Redis stream. Records live in PostgreSQL (`--db`, emptied
first), shared as several nodes would share them; each worker keeps its own embedded vector shard
(a shared vector store needs a Qdrant server, which is not needed to measure the queue). Prints a
table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import redis
from sqlalchemy import create_engine, select, text

from memsvc.config import RedisJobs
from memsvc.jobs import JobRunner
from memsvc.models import JobState
from storage.queue.redis import RedisStreamsQueue
from storage.sql import SqlRecordStore
from storage.sql import schema as t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="job threads per worker process")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--messages", type=int, default=1, help="messages per write job")
    ap.add_argument("--infer", action="store_true", help="writes derive facts and the graph (slower jobs)")
    ap.add_argument("--kill", action="store_true", help="SIGKILL the first worker while it runs a job")
    ap.add_argument("--db", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out", type=Path, default=Path("eval-out/bench-jobs.json"))
    args = ap.parse_args()

    engine = create_engine(args.db)
    with engine.begin() as conn:  # an empty database, as the workers' first start would find it
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    store = SqlRecordStore.from_url(args.db)
    store.migrate()
    stream = f"memsvc-bench:{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="memsvc-jobs-"))
    env = {**os.environ, "MEMSVC_RECORDS__KIND": "postgresql", "MEMSVC_RECORDS__URL": args.db,
           "MEMSVC_JOBS__KIND": "redis", "MEMSVC_JOBS__URL": args.redis, "MEMSVC_JOBS__STREAM": stream,
           "MEMSVC_JOBS__WORKERS": str(args.threads), "MEMSVC_JOBS__LEASE_S": "5",
           "MEMSVC_JOBS__SWEEP_INTERVAL_S": "0.5", "MEMSVC_GATES__KIND": "none"}
    procs = [subprocess.Popen([sys.executable, "-m", "api.cli", "worker"],
                              env={**env, "MEMSVC_DATA_DIR": str(tmp / f"w{i}")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(args.workers)]
    cfg = RedisJobs(url=args.redis, stream=stream, workers=0, lease_s=5)
    api_node = JobRunner(store, RedisStreamsQueue(args.redis, stream, cfg.group, cfg.lease_s), cfg)
    try:
        # Warm-up: one job per worker, so model loading is not in the figure.
        warm = [api_node.submit("bench", "write", {"body": _body(f"warm{i}", 1, False)}).id for i in range(args.workers)]
        _wait(store, warm, 600)
        started = time.monotonic()
        ids = [api_node.submit("bench", "write", {"body": _body(f"j{j}", args.messages, args.infer)}).id
               for j in range(args.jobs)]
        killed = _kill_one(store, ids, procs[0]) if args.kill else None
        _wait(store, ids, 1800)
        seconds = time.monotonic() - started
        jobs = [store.get_job("bench", i) for i in ids]
        states = Counter(j.state.value for j in jobs if j)
        attempts = Counter(j.attempts for j in jobs if j)
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.memories.c.source_ids).where(
                t.memories.c.tenant == "bench", t.memories.c.type == "episodic")).scalars()
            per_message = Counter(r[0] for r in rows if not r[0].startswith("warm"))
        result = {
            "workers": args.workers, "threads": args.threads, "jobs": args.jobs, "messages_per_job": args.messages,
            "infer": args.infer, "seconds": round(seconds, 2), "jobs_per_s": round(args.jobs / seconds, 1),
            "messages_per_s": round(args.jobs * args.messages / seconds, 1), "states": dict(states),
            "attempts": {str(k): v for k, v in sorted(attempts.items())},
            "killed_job": killed, "killed_job_attempts": next((j.attempts for j in jobs if j and j.id == killed), None),
            "messages_stored": len(per_message), "messages_expected": args.jobs * args.messages,
            "messages_stored_twice": sum(1 for v in per_message.values() if v > 1),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        redis.Redis.from_url(args.redis).delete(stream)
        store.close()
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _body(prefix: str, n: int, infer: bool) -> dict[str, object]:
    return {"user_id": "bench", "infer": infer, "wait": False, "metadata": {}, "messages": [
        {"id": f"{prefix}-m{i}", "role": "user", "name": "Sam",
         "content": f"Note {prefix}.{i}: I met my friend Joana at the harbour in Lisbon and we planned a trip."}
        for i in range(n)]}


def _wait(store: SqlRecordStore, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.count_jobs([JobState.PENDING, JobState.RUNNING], kind="write") == 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{len(ids)} jobs not finished after {timeout} s")


def _kill_one(store: SqlRecordStore, ids: list[str], victim: subprocess.Popen[bytes]) -> str | None:
    tag = f":{victim.pid}:"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for job_id in ids:
            job = store.get_job("bench", job_id)
            if job is not None and job.state is JobState.RUNNING and tag in (job.lease_owner or ""):
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                return job_id
        time.sleep(0.005)
    return None


if __name__ == "__main__":
    main()
