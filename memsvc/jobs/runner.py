"""`JobRunner`: one job runner for all background work (ARCHITECTURE §6).

Jobs are rows of the record store (the truth: `GET /v1/jobs/{id}`, the admin UI), delivered to worker
threads by a `JobQueue` (in-process, or Redis for several nodes). A worker runs a job only after
claiming its row (`RecordStore.claim_job`): state `running` under a lease that a heartbeat renews.
So a job never runs twice at once, a duplicate delivery is harmless, and the job of a worker that
crashed is claimed again once its lease runs out: the sweep hands it to the queue, and on Redis the
stream's pending list gives it to another consumer. Handlers must therefore be idempotent.

Outcomes: a handler's return value is the job's `result` (`done`); `MemsvcError` (bad input) fails the
job at once; any other exception retries with exponential backoff until `max_attempts`, then the job
is `failed` with the reason (the dead letter). A handler that stops early at shutdown raises
`JobInterrupted` (`ctx.check()` does it): the job goes back to pending, that attempt not counted.

Periodic jobs (`every`) get one job id per interval window, inserted only if absent, so with many
nodes each window runs once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from memsvc.config import InProcessJobs, RedisJobs
from memsvc.errors import Conflict, MemsvcError
from memsvc.models import SYSTEM_TENANT, Job, JobState, new_id, utcnow
from memsvc.ports import Delivery, JobQueue, RecordStore

log = logging.getLogger(__name__)


class JobInterrupted(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler (or `JobContext.check`) to stop early; the job is run again later."""


@dataclass
class JobContext:
    job: Job
    cancelled: threading.Event = field(default_factory=threading.Event)
    _beat: Callable[[], None] = lambda: None

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def heartbeat(self) -> None:
        """Renew the lease now (the runner also renews it every third of the lease)."""
        self._beat()

    def check(self) -> None:
        """Raise `JobInterrupted` once the runner stops or the lease was lost."""
        if self.cancelled.is_set():
            raise JobInterrupted(self.job.id)


Handler = Callable[[Job, JobContext], dict[str, Any] | None]


@dataclass(frozen=True)
class _Kind:
    handler: Handler
    max_attempts: int
    backoff_s: float


@dataclass
class _Schedule:
    name: str
    interval_s: float
    kind: str
    request: dict[str, Any]
    due: Callable[[], bool] | None
    window: int = -1  # the last window this node handled


@dataclass
class _Running:
    ctx: JobContext
    delivery: Delivery
    started: float


@dataclass
class KindStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    seconds: float = 0.0  # summed run time of finished runs


class JobRunner:
    def __init__(self, records: RecordStore, queue: JobQueue, config: InProcessJobs | RedisJobs) -> None:
        self.records = records
        self.queue = queue
        self.config = config
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._kinds: dict[str, _Kind] = {}
        self._schedules: list[_Schedule] = []
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats: dict[str, KindStats] = {}
        self._first_sweep = True

    # -- configuration -------------------------------------------------------------------
    def register(self, kind: str, handler: Handler, *, max_attempts: int = 5, backoff_s: float = 2.0) -> None:
        self._kinds[kind] = _Kind(handler, max_attempts, backoff_s)

    def every(
        self, name: str, interval_s: float, kind: str, request: dict[str, Any] | None = None,
        *, due: Callable[[], bool] | None = None,
    ) -> None:
        """Run `kind` once per `interval_s` across all nodes; `due` (cheap) may skip a window."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._schedules.append(_Schedule(name, interval_s, kind, dict(request or {}), due))

    # -- submitting ----------------------------------------------------------------------
    def submit(self, tenant: str, kind: str, request: dict[str, Any], *, job_id: str | None = None) -> Job:
        """Store the job, then queue it; an existing id of the tenant returns that job unchanged."""
        job = Job(id=job_id or new_id(), tenant=tenant, kind=kind, request=request, pushed_at=utcnow())
        if not self.records.create_job(job):
            existing = self.records.get_job(tenant, job.id)
            if existing is None:
                raise Conflict(f"job id {job.id} is taken")
            return existing
        self._push([job.id])
        return job

    def _push(self, ids: list[str]) -> None:
        try:
            self.queue.push(ids)
        except Exception as exc:  # stored already: the sweep queues it again after a lease
            log.warning("could not queue %d job(s): %s", len(ids), exc)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        targets: list[tuple[str, Callable[[], None]]] = [("sweep", self._sweep_loop), ("heartbeat", self._beat_loop)]
        targets += [(f"worker-{i}", self._work_loop) for i in range(self.config.workers)]
        for name, target in targets:
            th = threading.Thread(target=target, name=f"memsvc-jobs-{name}", daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self, timeout_s: float = 5.0) -> int:
        """Stop taking jobs, ask running handlers to stop, wait up to `timeout_s`, then hand the
        jobs still running back (pending, resumed by any node). Returns how many were handed back."""
        self._stop.set()
        with self._lock:
            for run in self._running.values():
                run.ctx.cancelled.set()
        deadline = time.monotonic() + timeout_s
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        released = self.records.release_jobs(self.owner)
        self.queue.close()
        return released

    def wait_idle(self, timeout_s: float = 60.0, *, kind: str | None = None) -> bool:
        """Block until no job (of `kind`) is pending or running; False on timeout. For tests, the
        evaluation runner and the CLI, which must see queued writes finished."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.records.count_jobs([JobState.PENDING, JobState.RUNNING], kind=kind) == 0:
                return True
            time.sleep(0.02)
        return False

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = len(self._running)
            kinds = {k: vars(v).copy() for k, v in self._stats.items()}
        return {"owner": self.owner, "workers": self.config.workers, "running": running,
                "queue_depth": self.queue.depth(), "kinds": kinds}

    # -- the threads ---------------------------------------------------------------------
    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                delivery = self.queue.pull(self.owner, timeout_s=0.5)
            except Exception as exc:
                log.warning("job queue unavailable: %s", exc)
                self._stop.wait(1.0)
                continue
            if delivery is not None:
                self._run(delivery)

    def _run(self, delivery: Delivery) -> None:
        now = utcnow()
        job = self.records.claim_job(delivery.job_id, self.owner, now + self._lease, now)
        if job is None:  # done, running elsewhere, not due yet, or gone (purged)
            self.queue.ack(delivery)
            return
        spec = self._kinds.get(job.kind)
        job_id = job.id
        ctx = JobContext(job, _beat=lambda: self._renew(job_id))
        if spec is None:  # another node (a `memsvc worker` of a newer version …) may know the kind
            job = job.model_copy(update={"attempts": job.attempts - 1})
            missing = {"code": "no_handler", "message": f"no handler for job kind {job.kind!r} on {self.owner}"}
            self._finish(job, delivery, JobState.PENDING, error=missing, run_after=utcnow() + self._lease)
            return
        if job.attempts > spec.max_attempts:
            reason = f"gave up after {spec.max_attempts} attempts (the last run did not finish)"
            self._finish(job, delivery, JobState.FAILED, error={"code": "job_failed", "message": reason})
            return
        with self._lock:
            self._running[job.id] = _Running(ctx, delivery, time.monotonic())
        started = time.monotonic()
        try:
            result = spec.handler(job, ctx)
        except JobInterrupted:
            with self._lock:
                self._running.pop(job.id, None)
            self.records.release_jobs(self.owner, [job.id])
            self.queue.ack(delivery)  # pending again: the sweep queues it
            return
        except MemsvcError as exc:
            self._finish(job, delivery, JobState.FAILED, error=exc.to_dict()["error"], started=started)
        except Exception as exc:
            log.exception("job %s (%s) attempt %d failed", job.id, job.kind, job.attempts)
            error: dict[str, Any] = {"code": "internal", "message": f"{type(exc).__name__}: {exc}",
                                     "attempts": job.attempts}
            if job.attempts < spec.max_attempts:
                retry_at = utcnow() + timedelta(seconds=spec.backoff_s * 2 ** (job.attempts - 1))
                self._finish(job, delivery, JobState.PENDING, error=error, run_after=retry_at, started=started)
            else:
                self._finish(job, delivery, JobState.FAILED, error=error, started=started)
        else:
            self._finish(job, delivery, JobState.DONE, result=result, started=started)

    def _finish(
        self, job: Job, delivery: Delivery, state: JobState, *, result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None, run_after: datetime | None = None, started: float | None = None,
    ) -> None:
        with self._lock:
            self._running.pop(job.id, None)
            if started is not None:
                st = self._stats.setdefault(job.kind, KindStats())
                st.seconds += time.monotonic() - started
                if state is JobState.DONE:
                    st.done += 1
                elif state is JobState.FAILED:
                    st.failed += 1
                else:
                    st.retried += 1
        done = job.model_copy(update={"state": state, "result": result, "error": error, "run_after": run_after,
                                      "updated_at": utcnow()})
        if not self.records.finish_job(done, self.owner):
            log.warning("job %s: lease lost before it finished; another run owns it", job.id)
        self.queue.ack(delivery)

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.config.lease_s)

    def _renew(self, job_id: str) -> None:
        with self._lock:
            run = self._running.get(job_id)
        if run is None:
            return
        if self.records.renew_job(job_id, self.owner, utcnow() + self._lease):
            self.queue.touch(run.delivery)
        else:  # another worker took the job over (this one stalled past its lease): stop
            run.ctx.cancelled.set()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.config.lease_s / 3):
            with self._lock:
                ids = list(self._running)
            for job_id in ids:
                try:
                    self._renew(job_id)
                except Exception as exc:
                    log.warning("could not renew the lease of job %s: %s", job_id, exc)

    def _sweep_loop(self) -> None:
        last_prune = 0.0
        while not self._stop.is_set():
            try:
                self.sweep()
                if time.monotonic() - last_prune > 60:
                    last_prune = time.monotonic()
                    self.records.prune_jobs(SYSTEM_TENANT, utcnow() - timedelta(seconds=self.config.keep_done_s))
            except Exception as exc:
                log.warning("job sweep failed: %s", exc)
            self._stop.wait(self.config.sweep_interval_s)

    def sweep(self, limit: int = 500) -> int:
        """Queue due periodic jobs, due retries and orphaned jobs (expired leases); how many."""
        if self.config.scheduler:
            self._tick()
        now = utcnow()
        # After a restart an in-process queue is empty: everything pending goes in again.
        fresh_queue = self._first_sweep and not self.queue.durable
        pushed_before = now if fresh_queue else now - self._lease
        ids = self.records.due_jobs(now, pushed_before, limit)
        self._first_sweep = False
        if ids:
            self.records.mark_pushed(ids, now)
            self._push(ids)
        return len(ids)

    def _tick(self) -> None:
        now = time.time()
        for s in self._schedules:
            window = int(now // s.interval_s)
            if window == s.window:
                continue
            s.window = window
            if s.due is not None and not s.due():
                continue
            job = Job(id=f"{s.name}:{window}", tenant=SYSTEM_TENANT, kind=s.kind, request=s.request, pushed_at=utcnow())
            if self.records.create_job(job):
                self._push([job.id])
