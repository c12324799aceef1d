"""The `jobs` table: job rows and the atomic claims that make a job run once at a time.

A claim is one conditional `UPDATE`: on PostgreSQL the row lock re-checks the condition after a
concurrent claim commits, on SQLite the database write lock serialises them; either way exactly one
claimer sees its row count be 1. Finishing and renewing check the owner, so a worker that lost its
lease (it stalled past it and another took the job over) cannot overwrite the new run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select, true, update
from sqlalchemy.engine import Connection

from memsvc.errors import Conflict
from memsvc.models import Job, JobState, utcnow
from storage.sql import schema as t
from storage.sql.engine import dialect_insert

_TIMES = ("created_at", "updated_at", "run_after", "pushed_at", "lease_until")
_UNFINISHED = (JobState.PENDING.value, JobState.RUNNING.value)


def _row(job: Job) -> dict[str, Any]:
    row = job.model_dump(mode="json")
    for name in _TIMES:  # the column type converts datetimes itself
        row[name] = getattr(job, name)
    return row


class JobRows:
    """Job methods of `SqlRecordStore` (mixed in; it provides the connections)."""

    _engine: Engine

    def _read(self) -> AbstractContextManager[Connection]: ...  # provided by the store

    def _write(self) -> AbstractContextManager[Connection]: ...

    def save_job(self, job: Job) -> None:
        """Insert or overwrite the job; an id held by another tenant raises `Conflict`."""
        j = t.jobs
        row = _row(job)
        stmt = dialect_insert(self._engine.dialect.name, j).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[j.c.id],
            set_={c: stmt.excluded[c] for c in row if c not in ("id", "tenant")},
            where=j.c.tenant == stmt.excluded.tenant,
        ).execution_options(preserve_rowcount=True)  # INSERT rowcount is not kept by default
        with self._write() as conn:
            if conn.execute(stmt).rowcount != 1:
                raise Conflict(f"job id {job.id} is taken")

    def create_job(self, job: Job) -> bool:
        j = t.jobs
        stmt = dialect_insert(self._engine.dialect.name, j).values(**_row(job))
        stmt = stmt.on_conflict_do_nothing(index_elements=[j.c.id]).execution_options(preserve_rowcount=True)
        with self._write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def get_job(self, tenant: str, job_id: str) -> Job | None:
        j = t.jobs
        with self._read() as conn:
            row = conn.execute(select(j).where(j.c.tenant == tenant, j.c.id == job_id)).first()
        return Job.model_validate(row._mapping) if row is not None else None

    def unfinished_jobs(self) -> list[Job]:
        """Pending or running jobs of every tenant, oldest first."""
        j = t.jobs
        stmt = select(j).where(j.c.state.in_(_UNFINISHED)).order_by(j.c.created_at, j.c.id)
        with self._read() as conn:
            return [Job.model_validate(r._mapping) for r in conn.execute(stmt)]

    def count_jobs(self, states: Sequence[JobState], *, kind: str | None = None) -> int:
        j = t.jobs
        stmt = select(func.count()).select_from(j).where(j.c.state.in_([s.value for s in states]))
        if kind is not None:
            stmt = stmt.where(j.c.kind == kind)
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def claim_job(self, job_id: str, owner: str, lease_until: datetime, now: datetime) -> Job | None:
        j = t.jobs
        claimable = or_(
            and_(j.c.state == JobState.PENDING.value, or_(j.c.run_after.is_(None), j.c.run_after <= now)),
            and_(j.c.state == JobState.RUNNING.value, j.c.lease_until < now),
        )
        stmt = (
            update(j).where(j.c.id == job_id, claimable)
            .values(state=JobState.RUNNING.value, lease_owner=owner, lease_until=lease_until,
                    attempts=j.c.attempts + 1, updated_at=now)
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            if conn.execute(stmt).rowcount != 1:
                return None
            row = conn.execute(select(j).where(j.c.id == job_id)).one()
        return Job.model_validate(row._mapping)

    def renew_job(self, job_id: str, owner: str, lease_until: datetime) -> bool:
        j = t.jobs
        stmt = (
            update(j).where(j.c.id == job_id, j.c.lease_owner == owner, j.c.state == JobState.RUNNING.value)
            .values(lease_until=lease_until).execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def finish_job(self, job: Job, owner: str) -> bool:
        j = t.jobs
        stmt = (
            update(j).where(j.c.id == job.id, j.c.lease_owner == owner, j.c.state == JobState.RUNNING.value)
            .values(state=job.state.value, result=job.result, error=job.error, run_after=job.run_after,
                    attempts=job.attempts, updated_at=job.updated_at, lease_owner=None, lease_until=None,
                    pushed_at=None)
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def release_jobs(self, owner: str, job_ids: Sequence[str] | None = None) -> int:
        j = t.jobs
        stmt = (
            update(j).where(j.c.lease_owner == owner, j.c.state == JobState.RUNNING.value,
                            j.c.id.in_(list(job_ids)) if job_ids is not None else true())
            .values(state=JobState.PENDING.value, attempts=j.c.attempts - 1, lease_owner=None,
                    lease_until=None, pushed_at=None, updated_at=utcnow())
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            return int(conn.execute(stmt).rowcount)

    def due_jobs(self, now: datetime, pushed_before: datetime, limit: int) -> list[str]:
        j = t.jobs
        waiting = and_(
            j.c.state == JobState.PENDING.value,
            or_(j.c.run_after.is_(None), j.c.run_after <= now),
            or_(j.c.pushed_at.is_(None), j.c.pushed_at < pushed_before),
        )
        orphaned = and_(j.c.state == JobState.RUNNING.value, j.c.lease_until < now)
        stmt = select(j.c.id).where(j.c.state.in_(_UNFINISHED), or_(waiting, orphaned))
        with self._read() as conn:
            return list(conn.execute(stmt.order_by(j.c.created_at, j.c.id).limit(limit)).scalars())

    def mark_pushed(self, ids: Sequence[str], at: datetime) -> None:
        j = t.jobs
        with self._write() as conn:
            for chunk in _chunks(ids):
                conn.execute(update(j).where(j.c.id.in_(chunk)).values(pushed_at=at))

    def prune_jobs(self, tenant: str, finished_before: datetime) -> int:
        j = t.jobs
        stmt = delete(j).where(
            j.c.tenant == tenant, j.c.state.in_([JobState.DONE.value, JobState.FAILED.value]),
            j.c.updated_at < finished_before,
        )
        with self._write() as conn:
            return int(conn.execute(stmt).rowcount)


def _chunks(ids: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])
