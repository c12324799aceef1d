"""Two real `memsvc worker` processes consume one Redis queue; one is killed with SIGKILL in the
middle of a write job: every job still completes, once, and no message is stored twice.

Records are shared in PostgreSQL, as several nodes would share them. Each worker keeps its own
embedded vector shard: a shared vector store needs a Qdrant server, which cannot run here, and what
this test measures is the queue (delivery, leases, claims), not recall across nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from memsvc.config import RedisJobs
from memsvc.jobs import JobRunner
from memsvc.models import JobState
from storage.queue.redis import RedisStreamsQueue
from storage.sql import SqlRecordStore
from storage.sql import schema as t
from tests.conftest import reset_postgres
from tests.jobs.conftest import REDIS_URL

pytestmark = [pytest.mark.service, pytest.mark.slow]

JOBS, MESSAGES = 10, 12


def worker_env(tmp_path: Path, name: str, db_url: str, stream: str) -> dict[str, str]:
    return {
        **os.environ,
        "MEMSVC_DATA_DIR": str(tmp_path / name),
        "MEMSVC_RECORDS__KIND": "postgresql",
        "MEMSVC_RECORDS__URL": db_url,
        "MEMSVC_JOBS__KIND": "redis",
        "MEMSVC_JOBS__URL": REDIS_URL,
        "MEMSVC_JOBS__STREAM": stream,
        "MEMSVC_JOBS__LEASE_S": "2",
        "MEMSVC_JOBS__SWEEP_INTERVAL_S": "0.5",
        "MEMSVC_GATES__KIND": "none",
    }


@pytest.fixture
def workers(tmp_path: Path, postgres_url: str, redis_stream: str) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    db_url = reset_postgres(postgres_url)
    SqlRecordStore.from_url(db_url).migrate()
    procs = [
        subprocess.Popen([sys.executable, "-m", "api.cli", "worker"], env=worker_env(tmp_path, n, db_url, redis_stream),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in ("w1", "w2")
    ]
    yield db_url, procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def test_a_killed_worker_s_job_completes_once_elsewhere(
    workers: tuple[str, list[subprocess.Popen[bytes]]], redis_stream: str
) -> None:
    db_url, (victim, survivor) = workers
    store = SqlRecordStore.from_url(db_url)
    cfg = RedisJobs(url=REDIS_URL, stream=redis_stream, workers=0, lease_s=2)
    api_node = JobRunner(store, RedisStreamsQueue(REDIS_URL, redis_stream, cfg.group, cfg.lease_s), cfg)
    ids = []
    for j in range(JOBS):
        body = {"user_id": "alice", "infer": True, "wait": False, "metadata": {}, "messages": [
            {"id": f"j{j}-m{i}", "role": "user", "name": "Alice",
             "content": f"On day {i} of trip {j} I visited the old harbour of Lisbon and met my friend Joana there."}
            for i in range(MESSAGES)
        ]}
        ids.append(api_node.submit("acme", "write", {"body": body, "actor": "test"}).id)

    victim_tag = f":{victim.pid}:"
    deadline = time.monotonic() + 240
    killed = None
    while killed is None and time.monotonic() < deadline:
        for job_id in ids:
            job = store.get_job("acme", job_id)
            if job is not None and job.state is JobState.RUNNING and victim_tag in (job.lease_owner or ""):
                victim.send_signal(signal.SIGKILL)
                killed = job_id
                break
        time.sleep(0.01)
    assert killed is not None, "the victim never ran a job"
    victim.wait(timeout=30)

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if store.count_jobs([JobState.PENDING, JobState.RUNNING], kind="write") == 0:
            break
        assert survivor.poll() is None, "the surviving worker exited"
        time.sleep(0.2)
    jobs = [store.get_job("acme", i) for i in ids]
    assert [j.state if j else None for j in jobs] == [JobState.DONE] * JOBS
    by_id = {j.id: j for j in jobs if j}
    assert by_id[killed].attempts == 2  # claimed by the victim, then once more by the survivor
    assert all(j.attempts == 1 for i, j in by_id.items() if i != killed)
    m = t.memories
    with store.engine.connect() as conn:
        sources = conn.execute(select(m.c.source_ids).where(m.c.tenant == "acme", m.c.type == "episodic")).scalars()
        per_message = Counter(s[0] for s in sources)
    assert len(per_message) == JOBS * MESSAGES and set(per_message.values()) == {1}
    store.close()
