"""`JobRunner` on the real record store (SQLite and PostgreSQL): outcomes, retries, dead letters,
claims that run a job once, orphaned jobs taken over, periodic windows, and a fast stop."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from memsvc.config import InProcessJobs
from memsvc.errors import InvalidInput
from memsvc.jobs import InProcessQueue, JobContext, JobRunner
from memsvc.models import SYSTEM_TENANT, Job, JobState, utcnow
from storage.sql import SqlRecordStore

FAST = InProcessJobs(workers=2, lease_s=1.0, sweep_interval_s=0.05)


@pytest.fixture
def runners() -> Iterator[Callable[..., JobRunner]]:
    made: list[JobRunner] = []

    def make(store: SqlRecordStore, **config: Any) -> JobRunner:
        cfg = FAST.model_copy(update=config)
        runner = JobRunner(store, InProcessQueue(cfg.lease_s), cfg)
        made.append(runner)
        return runner

    yield make
    for r in made:
        r.stop(1.0)


def wait_for(store: SqlRecordStore, tenant: str, job_id: str, states: set[JobState], timeout: float = 20.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(tenant, job_id)
        if job is not None and job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not in {states}: {store.get_job(tenant, job_id)}")


FINAL = {JobState.DONE, JobState.FAILED}


def test_a_job_runs_and_stores_its_result(record_store: SqlRecordStore, runners: Callable[..., JobRunner]) -> None:
    runner = runners(record_store)
    runner.register("add", lambda job, ctx: {"sum": job.request["a"] + job.request["b"], "attempt": ctx.attempt})
    runner.start()
    job = runner.submit("t", "add", {"a": 2, "b": 3})
    done = wait_for(record_store, "t", job.id, FINAL)
    assert (done.state, done.result, done.error, done.attempts) == (JobState.DONE, {"sum": 5, "attempt": 1}, None, 1)
    assert done.lease_owner is None and done.lease_until is None
    again = runner.submit("t", "add", {"a": 9, "b": 9}, job_id=job.id)  # same id: the stored job, untouched
    assert (again.state, again.result) == (JobState.DONE, {"sum": 5, "attempt": 1})
    assert runner.wait_idle(5)


def test_bad_input_fails_at_once_and_other_errors_retry_then_dead_letter(
    record_store: SqlRecordStore, runners: Callable[..., JobRunner]
) -> None:
    calls: Counter[str] = Counter()

    def bad(job: Job, ctx: JobContext) -> None:
        calls["bad"] += 1
        raise InvalidInput("date value out of range")

    def flaky(job: Job, ctx: JobContext) -> dict[str, int]:
        calls["flaky"] += 1
        if ctx.attempt < 3:
            raise ConnectionError("vector store unreachable")
        return {"attempt": ctx.attempt}

    def broken(job: Job, ctx: JobContext) -> None:
        calls["broken"] += 1
        raise RuntimeError("always")

    runner = runners(record_store)
    runner.register("bad", bad)
    runner.register("flaky", flaky, max_attempts=5, backoff_s=0.05)
    runner.register("broken", broken, max_attempts=3, backoff_s=0.05)
    runner.start()
    ids = {k: runner.submit("t", k, {}).id for k in ("bad", "flaky", "broken")}
    bad_job = wait_for(record_store, "t", ids["bad"], FINAL)
    assert (bad_job.state, bad_job.attempts, bad_job.error) == (
        JobState.FAILED, 1, {"code": "invalid_input", "message": "date value out of range"})
    flaky_job = wait_for(record_store, "t", ids["flaky"], FINAL)
    assert (flaky_job.state, flaky_job.attempts, flaky_job.result) == (JobState.DONE, 3, {"attempt": 3})
    broken_job = wait_for(record_store, "t", ids["broken"], FINAL)
    assert broken_job.state is JobState.FAILED and broken_job.attempts == 3
    assert broken_job.error == {"code": "internal", "message": "RuntimeError: always", "attempts": 3}
    assert calls == Counter({"bad": 1, "flaky": 3, "broken": 3})
    stats = runner.stats()["kinds"]
    assert (stats["broken"]["failed"], stats["broken"]["retried"], stats["flaky"]["done"]) == (1, 2, 1)


def test_two_nodes_given_the_same_jobs_run_each_once(
    stores: tuple[SqlRecordStore, SqlRecordStore], runners: Callable[..., JobRunner]
) -> None:
    ran: Counter[str] = Counter()
    lock = threading.Lock()

    def count(job: Job, ctx: JobContext) -> None:
        with lock:
            ran[job.id] += 1
        time.sleep(0.01)

    a, b = runners(stores[0], scheduler=False), runners(stores[1], scheduler=False)
    for r in (a, b):
        r.register("count", count)
    ids = [a.submit("t", "count", {}).id for _ in range(20)]
    b.queue.push(ids)  # a duplicate delivery of every job to the other node
    a.start()
    b.start()
    # Either node may hold the last job: wait until the store says every job is done, not until one
    # node is idle (node a idle while b still ran a job made this test flaky).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {stores[0].get_job("t", i).state for i in ids} != {JobState.DONE}:  # type: ignore[union-attr]
        time.sleep(0.05)
    assert a.wait_idle(30) and b.wait_idle(30)
    assert ran == Counter(dict.fromkeys(ids, 1))
    assert {stores[0].get_job("t", i).state for i in ids} == {JobState.DONE}  # type: ignore[union-attr]


def test_an_orphaned_job_is_taken_over_when_its_lease_runs_out(
    stores: tuple[SqlRecordStore, SqlRecordStore], runners: Callable[..., JobRunner]
) -> None:
    job = Job(tenant="t", kind="echo", request={"x": 1})
    stores[0].create_job(job)
    now = utcnow()
    # What a worker killed mid-job leaves behind: the row claimed under a lease nobody renews.
    claimed = stores[0].claim_job(job.id, "dead-node:123:abc", now + timedelta(seconds=0.6), now)
    assert claimed is not None and claimed.attempts == 1
    survivor = runners(stores[1])
    survivor.register("echo", lambda j, ctx: {"x": j.request["x"], "owner": survivor.owner, "attempt": ctx.attempt})
    survivor.start()
    time.sleep(0.3)
    assert stores[0].get_job("t", job.id).state is JobState.RUNNING  # type: ignore[union-attr]
    done = wait_for(stores[0], "t", job.id, FINAL)
    assert (done.state, done.result) == (JobState.DONE, {"x": 1, "owner": survivor.owner, "attempt": 2})
    # the dead owner's late finish cannot overwrite the new run's outcome
    late = done.model_copy(update={"state": JobState.FAILED, "error": {"code": "internal", "message": "late"}})
    assert stores[0].finish_job(late, "dead-node:123:abc") is False
    assert stores[0].get_job("t", job.id).state is JobState.DONE  # type: ignore[union-attr]


def test_a_periodic_job_runs_once_per_window_across_nodes(
    stores: tuple[SqlRecordStore, SqlRecordStore], runners: Callable[..., JobRunner]
) -> None:
    ran: list[str] = []
    skipped_ticks = threading.Event()

    def never_due() -> bool:
        skipped_ticks.set()
        return False

    nodes = [runners(s) for s in stores]
    for n in nodes:
        n.register("sweep", lambda job, ctx: ran.append(job.id) or {"window": job.id})
        n.register("idle", lambda job, ctx: {"ran": True})
        n.every("sweep", 0.25, "sweep", {"scope": "all"})
        n.every("idle", 0.25, "idle", due=never_due)
    for n in nodes:
        n.start()
    time.sleep(1.3)
    for n in nodes:
        n.stop(1.0)
    windows = [int(i.split(":")[1]) for i in ran]
    assert len(ran) == len(set(ran)) >= 4  # one run per window although both nodes tick
    assert max(windows) - min(windows) + 1 >= len(ran)
    job = stores[0].get_job(SYSTEM_TENANT, ran[0])
    assert job is not None and (job.kind, job.request, job.state) == ("sweep", {"scope": "all"}, JobState.DONE)
    assert skipped_ticks.is_set()
    assert stores[0].count_jobs([JobState.DONE, JobState.PENDING, JobState.RUNNING], kind="idle") == 0


def test_stop_is_fast_and_hands_unfinished_jobs_back(
    stores: tuple[SqlRecordStore, SqlRecordStore], runners: Callable[..., JobRunner]
) -> None:
    started = threading.Event()

    def cooperative(job: Job, ctx: JobContext) -> None:
        started.set()
        while True:
            ctx.check()  # raises JobInterrupted once the runner stops
            time.sleep(0.01)

    def stubborn(job: Job, ctx: JobContext) -> dict[str, str]:
        started.set()
        time.sleep(2.0)  # ignores the stop: its late outcome must not land
        return {"by": "stubborn"}

    first = runners(stores[0], workers=1)
    first.register("coop", cooperative)
    first.register("slow", stubborn)
    first.start()
    coop = first.submit("t", "coop", {})
    assert started.wait(10)
    t0 = time.monotonic()
    first.stop(1.0)
    assert time.monotonic() - t0 < 1.5
    back = stores[0].get_job("t", coop.id)
    assert back is not None and (back.state, back.attempts, back.lease_owner) == (JobState.PENDING, 0, None)

    second = runners(stores[0], workers=1)
    second.register("slow", stubborn)
    second.start()
    started.clear()
    slow = second.submit("t", "slow", {})
    assert started.wait(10)
    t0 = time.monotonic()
    second.stop(0.3)
    assert time.monotonic() - t0 < 1.0
    assert stores[0].get_job("t", slow.id).state is JobState.PENDING  # type: ignore[union-attr]

    third = runners(stores[1])
    third.register("coop", lambda job, ctx: {"by": "third"})
    third.register("slow", lambda job, ctx: {"by": "third"})
    third.start()
    for job_id in (coop.id, slow.id):
        done = wait_for(stores[1], "t", job_id, FINAL)
        assert (done.state, done.result, done.attempts) == (JobState.DONE, {"by": "third"}, 1)
    time.sleep(2.0)  # the stubborn thread of the stopped runner has returned by now
    assert stores[1].get_job("t", slow.id).result == {"by": "third"}  # type: ignore[union-attr]


def test_finished_system_jobs_are_pruned(record_store: SqlRecordStore) -> None:
    old = utcnow() - timedelta(days=2)
    rows = [
        Job(id="sys-done", tenant=SYSTEM_TENANT, kind="sweep", state=JobState.DONE, updated_at=old),
        Job(id="sys-failed", tenant=SYSTEM_TENANT, kind="sweep", state=JobState.FAILED, updated_at=old),
        Job(id="sys-new", tenant=SYSTEM_TENANT, kind="sweep", state=JobState.DONE),
        Job(id="sys-pending", tenant=SYSTEM_TENANT, kind="sweep", updated_at=old),
        Job(id="user-done", tenant="t", kind="write", state=JobState.DONE, updated_at=old),
    ]
    for job in rows:
        record_store.create_job(job)
    assert record_store.prune_jobs(SYSTEM_TENANT, utcnow() - timedelta(days=1)) == 2
    left = [j.id for j in rows if record_store.get_job(j.tenant, j.id) is not None]
    assert left == ["sys-new", "sys-pending", "user-done"]


def test_a_job_whose_runs_never_finish_is_given_up(
    stores: tuple[SqlRecordStore, SqlRecordStore], runners: Callable[..., JobRunner]
) -> None:
    """A job that kills its worker every time (a poison job) ends failed after `max_attempts` claims."""
    job = Job(tenant="t", kind="poison", request={})
    stores[0].create_job(job)
    for i in range(2):  # two workers died while running it
        now = utcnow()
        assert stores[0].claim_job(job.id, f"dead-{i}", now + timedelta(seconds=0.2), now) is not None
        time.sleep(0.25)
    survivor = runners(stores[1])
    survivor.register("poison", lambda j, ctx: {"ran": True}, max_attempts=2)
    survivor.start()
    done = wait_for(stores[1], "t", job.id, FINAL)
    assert (done.state, done.attempts, done.result) == (JobState.FAILED, 3, None)
    assert done.error == {"code": "job_failed", "message": "gave up after 2 attempts (the last run did not finish)"}
