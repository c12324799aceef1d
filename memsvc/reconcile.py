"""Reconciliation: compare SQL with the vector index and the graph, and repair drift.

The outbox keeps the derived stores in step with SQL; this job is the safety net for what it
cannot see (a store restored from an old backup, a point written by a request whose memory was
purged meanwhile, a dead letter). Per tenant:

- **orphan points**: points whose memory SQL does not hold (or holds as deleted) are deleted;
- **stale points**: points whose payload status differs from SQL get SQL's payload;
- **missing points**: memories SQL holds (any status but deleted) without a point are indexed;
- **orphan graph memories**: memories in a user's graph that SQL does not hold are removed
  from the graph (with the entities only they named).

Memories with an outbox entry not done yet are left alone (that entry is on its way). Points are
read before SQL, so a point written meanwhile belongs to a memory SQL already shows. A memory
whose graph extraction never ran cannot be told from one that names no entity, so missing graph
records are not detected (the outbox and its dead letters cover them).

Two kinds of pass, per tenant. A **full** pass does all of the above, reading every point and every
memory; it runs when the tenant has never had one, when the last is `full_interval_s` old, or when
asked (`full=True`). In between, a pass reads only the memories **changed** since the tenant's last
pass (`updated_at` after its start, less `MARK_SLACK` for other nodes' clocks and for a write whose
commit came after its timestamp) and checks their points: missing, stale, or left behind by a delete.
Drift that no SQL change marks (a point without any memory, a restored vector backup, a dead letter
of an old change, the graph) waits for the next full pass. The marks (`job_marks`) move to a pass's
start when it completes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from memsvc.indexer import Indexer, indexed, indexed_status, payload_of
from memsvc.jobs import JobContext
from memsvc.models import Job, OutboxEntry, OutboxOp, utcnow
from memsvc.ports import GraphStore, RecordStore, VectorFilter, VectorIndex

log = logging.getLogger(__name__)

RECONCILE_JOB = "reconcile"
FULL_MARK, CHANGED_MARK = "reconcile.full", "reconcile.changed"  # job_marks kinds
MARK_SLACK = timedelta(seconds=60)
PAGE = 500


@dataclass
class ReconcileResult:
    tenants: int = 0
    full_passes: int = 0  # tenants read whole; the others had only their changes read
    points_scanned: int = 0
    memories_scanned: int = 0
    orphan_points: int = 0
    stale_points: int = 0
    missing_points: int = 0
    orphan_graph_memories: int = 0
    # points stored before payloads carried the digest of their text, given it (not drift: the
    # vector is current, the payload only lacked what lets a sweep read it back)
    digests_backfilled: int = 0
    interrupted: bool = False

    @property
    def repaired(self) -> int:
        return self.orphan_points + self.stale_points + self.missing_points + self.orphan_graph_memories

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "repaired": self.repaired}


class Reconciler:
    def __init__(self, records: RecordStore, vectors: VectorIndex, indexer: Indexer, graph: GraphStore | None,
                 full_interval_s: float = 86400.0) -> None:
        self.records = records
        self.vectors = vectors
        self.indexer = indexer
        self.graph = graph
        self.full_interval = timedelta(seconds=full_interval_s)

    def run(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """The periodic job (`memsvc.jobs` Handler); the counts are the job's result."""
        full = bool(job.request.get("full"))
        return self.reconcile(full=full, cancelled=ctx.cancelled, heartbeat=ctx.heartbeat).as_dict()

    def reconcile(
        self, *, full: bool = False, cancelled: threading.Event | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> ReconcileResult:
        """A pass over every tenant: full where due (or `full`), else over what changed since the last."""
        result = ReconcileResult()
        for tenant in self.records.tenants():
            if cancelled is not None and cancelled.is_set():
                result.interrupted = True
                break
            result.tenants += 1
            started = utcnow()
            last_full = self.records.job_mark(FULL_MARK, tenant)
            last = self.records.job_mark(CHANGED_MARK, tenant)
            if full or last_full is None or last is None or started - last_full >= self.full_interval:
                result.full_passes += 1
                self._points(tenant, result)
                self._memories(tenant, result)
                self._graph(tenant, result)
                self.records.set_job_mark(FULL_MARK, tenant, started)
            else:
                self._changed(tenant, last - MARK_SLACK, result)
            self.records.set_job_mark(CHANGED_MARK, tenant, started)
            if heartbeat is not None:
                heartbeat()
        if result.repaired:
            log.warning("reconciliation repaired drift: %s", result.as_dict())
        return result

    def _in_flight(self) -> set[str]:
        return {i for e in self.records.pending_outbox(limit=100_000) for i in e.memory_ids}

    def _points(self, tenant: str, result: ReconcileResult) -> None:
        # Statuses and users only (not whole memories): at 1M memories the whole models made the
        # pass several times slower; a stale point's payload is built from its memory, loaded then.
        cursor: str | None = None
        while True:
            page, cursor = self.vectors.scan(VectorFilter(tenant=tenant), PAGE, cursor)
            result.points_scanned += len(page)
            held = {i: s for i, s in self.records.memory_states(tenant, [p.id for p in page]).items() if indexed_status(s[0])}
            busy = self._in_flight()
            orphans = [p.id for p in page if p.id not in busy and p.id not in held]
            drifted = [p.id for p in page if p.id in held and p.id not in busy and (p.status, p.user_id) != held[p.id]]
            self._repair(tenant, orphans, drifted, result)
            # A point with no outbox entry in flight embeds its memory's current text (the outbox
            # applies a memory's changes in order), so its payload may say so.
            undigested = [p.id for p in page if p.id in held and p.id not in busy and p.id not in drifted
                          and p.digest is None]
            if undigested:
                cubes = [c for c in self.records.get_memories(tenant, undigested) if indexed(c)]
                self.vectors.set_payload([(c.id, payload_of(c)) for c in cubes])
                result.digests_backfilled += len(cubes)
            if cursor is None:
                return

    def _memories(self, tenant: str, result: ReconcileResult) -> None:
        batch: list[tuple[str, str]] = []
        for memory_id, status, user_id in self.records.iter_memory_states(tenant):
            result.memories_scanned += 1
            if indexed_status(status):
                batch.append((memory_id, user_id))
            if len(batch) >= PAGE:
                self._index_missing(tenant, batch, result)
                batch = []
        if batch:
            self._index_missing(tenant, batch, result)

    def _index_missing(self, tenant: str, memories: list[tuple[str, str]], result: ReconcileResult) -> None:
        busy = self._in_flight()
        have = self.vectors.states([i for i, _ in memories])
        self._index(tenant, [(i, u) for i, u in memories if i not in have and i not in busy], result)

    def _changed(self, tenant: str, since: datetime, result: ReconcileResult) -> None:
        batch: list[tuple[str, str, str]] = []
        for row in self.records.changed_memory_states(tenant, since):
            result.memories_scanned += 1
            batch.append(row)
            if len(batch) >= PAGE:
                self._check_changed(tenant, batch, result)
                batch = []
        if batch:
            self._check_changed(tenant, batch, result)

    def _check_changed(self, tenant: str, rows: list[tuple[str, str, str]], result: ReconcileResult) -> None:
        """Changed memories against their points: a deleted one's point goes, a missing point is
        indexed, a point whose status or user differs gets SQL's payload."""
        have = self.vectors.states([i for i, _, _ in rows])
        busy = self._in_flight()
        result.points_scanned += len(have)
        live = [(i, s, u) for i, s, u in rows if i not in busy]
        gone = [i for i, s, _ in live if not indexed_status(s) and i in have]
        if gone:  # as SQL holds them now (a memory deleted and then restored must keep its point)
            now = self.records.memory_states(tenant, gone)
            gone = [i for i in gone if i not in now or not indexed_status(now[i][0])]
        drifted = [i for i, s, u in live if indexed_status(s) and i in have and (have[i].status, have[i].user_id) != (s, u)]
        self._repair(tenant, gone, drifted, result)
        self._index(tenant, [(i, u) for i, s, u in live if indexed_status(s) and i not in have], result)

    def _repair(self, tenant: str, orphans: list[str], drifted: list[str], result: ReconcileResult) -> None:
        """Delete points SQL does not index; give drifted points their memory's payload, read from SQL."""
        if orphans:
            self.vectors.delete(orphans)
            result.orphan_points += len(orphans)
        if drifted:
            stale = [c for c in self.records.get_memories(tenant, drifted) if indexed(c)]
            self.vectors.set_payload([(c.id, payload_of(c)) for c in stale])
            result.stale_points += len(stale)

    def _index(self, tenant: str, missing: list[tuple[str, str]], result: ReconcileResult) -> None:
        for user_id in sorted({u for _, u in missing}):
            ids = [i for i, u in missing if u == user_id]
            self.indexer.apply(OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS,
                                           payload={"user_id": user_id, "ids": ids}))
            result.missing_points += len(ids)

    def _graph(self, tenant: str, result: ReconcileResult) -> None:
        if self.graph is None:
            return
        for stats in self.records.scope_stats(tenant):
            snap = self.graph.snapshot(tenant, stats.user_id)
            if not snap.memory_ids:
                continue
            busy = self._in_flight()
            held = {i for i, (status, _) in self.records.memory_states(tenant, snap.memory_ids).items() if indexed_status(status)}
            orphans = [m for m in snap.memory_ids if m not in held and m not in busy]
            if orphans:
                self.graph.delete_memories(tenant, orphans)
                result.orphan_graph_memories += len(orphans)
