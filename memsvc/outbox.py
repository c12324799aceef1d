"""The outbox worker: applies committed changes to the derived stores, retries, dead letters.

A change (write, correction, delete, purge) commits its SQL rows and its outbox entries in one
transaction. Then:

1. **The request applies its own entries** (`deliver`) right after the commit, in order. An entry
   that fails is scheduled for a retry (`next_at`, exponential backoff from `backoff_s`, at most
   `max_backoff_s`); later entries of this request that touch the same memories are left for the
   drain, so they never overtake it. With `defer_graph` the request leaves its graph entries to
   the drain (due at once) and returns before the graph is indexed.
2. **The drain** (`drain`, a periodic job of the job runner) walks the entries not done in id
   order and applies those that are due: retries whose time came, deferred entries, and entries
   older than `grace_s` that no request applied (it crashed between commit and delivery). Per
   memory, order holds: an entry is not applied while an earlier entry of one of its memories is
   not done (waiting for its retry, or dead); an entry of a scope with an unfinished purge waits
   for the purge. Other memories and scopes go on, so one failing entry blocks nothing else.
3. After `max_attempts` failures an entry is a **dead letter** (`dead_at`): it is no longer
   retried, `/readyz` reports `degraded` with the count, `/metrics` exports it, the admin UI lists
   it, and `revive` gives it a fresh set of attempts.

Ops converge the stores on SQL when they run (`memsvc.indexer`), so an entry applied twice (a
request slower than the grace, two drains on two nodes) or late does no harm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from memsvc.config import OutboxConfig
from memsvc.indexer import GRAPH_OPS, Indexer
from memsvc.jobs import JobContext
from memsvc.models import Job, OutboxEntry, OutboxOp, utcnow
from memsvc.ports import RecordStore

log = logging.getLogger(__name__)

DRAIN_BUDGET_S = 30.0  # one drain run stops after this long; the next window goes on
OUTBOX_JOB = "outbox.drain"  # the job kind of the periodic drain


@dataclass
class DrainResult:
    applied: int = 0
    failed: int = 0
    dead: int = 0
    waiting: int = 0  # not due yet, or held back behind an earlier entry of the same memory
    pruned: int = 0
    purged: int = 0  # purge entries applied
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "failed": self.failed, "dead": self.dead, "waiting": self.waiting,
                "pruned": self.pruned, "purged": self.purged, "interrupted": self.interrupted, "errors": self.errors[:5]}


class _Order:
    """Which later entries must wait: the memories and purged scopes of entries not done."""

    def __init__(self) -> None:
        self.memories: set[tuple[str, str]] = set()
        self.scopes: set[tuple[str, str]] = set()

    def blocks(self, entry: OutboxEntry) -> bool:
        if entry.scope in self.scopes:
            return True
        return any((entry.tenant, i) in self.memories for i in entry.memory_ids)

    def hold(self, entry: OutboxEntry) -> None:
        if entry.op is OutboxOp.PURGE_SCOPE:
            self.scopes.add(entry.scope)
        self.memories.update((entry.tenant, i) for i in entry.memory_ids)


class Outbox:
    def __init__(self, records: RecordStore, indexer: Indexer, config: OutboxConfig) -> None:
        self.records = records
        self.indexer = indexer
        self.config = config
        self._draining = threading.Lock()  # one drain at a time in this process

    # -- the request's own entries --------------------------------------------------------
    def deferred(self, entry: OutboxEntry) -> bool:
        """Whether the request leaves this entry to the drain (graph work with `defer_graph`)."""
        return self.config.defer_graph and entry.op in GRAPH_OPS

    def deliver(self, entries: Sequence[OutboxEntry], embeddings: Mapping[str, np.ndarray] | None = None) -> int:
        """Apply freshly committed entries in order (all but the deferred ones); returns how many
        were applied. Never raises: a failed entry is scheduled for a retry by the drain."""
        order = _Order()
        done: list[int] = []
        for entry in entries:
            if self.deferred(entry) or order.blocks(entry):
                order.hold(entry)
                continue
            if not self._attempt(entry, embeddings):
                order.hold(entry)
                continue
            if entry.id is not None:
                done.append(entry.id)
        if done:
            self._complete(done)
        return len(done)

    # -- the drain ------------------------------------------------------------------------
    def due(self) -> bool:
        """Cheap: is any entry due now (the scheduler's check before it starts a drain)?"""
        now = utcnow()
        return bool(self.records.due_outbox(now, now - timedelta(seconds=self.config.grace_s), limit=1,
                                            ops_now=self._ops_now()))

    def drain(
        self, *, cancelled: threading.Event | None = None, heartbeat: Callable[[], None] | None = None,
        budget_s: float = DRAIN_BUDGET_S,
    ) -> DrainResult:
        """Apply every due entry in order (see the module doc); stops early when `cancelled` is set
        or after `budget_s`."""
        result = DrainResult()
        if not self._draining.acquire(blocking=False):
            return result  # another thread of this process is draining
        try:
            self._drain(result, cancelled, heartbeat, time.monotonic() + budget_s)
            keep = self.config.keep_done_s
            if not result.interrupted:
                result.pruned = self.records.prune_outbox(utcnow() - timedelta(seconds=keep))
        finally:
            self._draining.release()
        return result

    def _drain(self, result: DrainResult, cancelled: threading.Event | None,
               heartbeat: Callable[[], None] | None, deadline: float) -> None:
        now = utcnow()
        fresh_before = now - timedelta(seconds=self.config.grace_s)
        ops_now = self._ops_now()
        try:
            self._drain_pages(result, cancelled, heartbeat, deadline, now, fresh_before, ops_now, _Order())
        finally:
            if result.purged:
                self.records.scrub()  # the done purge entries named their users

    def _drain_pages(self, result: DrainResult, cancelled: threading.Event | None, heartbeat: Callable[[], None] | None,
                     deadline: float, now: datetime, fresh_before: datetime, ops_now: list[OutboxOp],
                     order: _Order) -> None:
        after: int | None = None
        while True:
            page = self.records.pending_outbox(limit=self.config.batch, after=after)
            if not page:
                return
            done: list[int] = []
            for entry in page:
                if (cancelled is not None and cancelled.is_set()) or time.monotonic() > deadline:
                    result.interrupted = True
                    break
                due = entry.next_at <= now if entry.next_at is not None else (
                    entry.created_at <= fresh_before or entry.op in ops_now)
                if not due or order.blocks(entry):
                    result.waiting += 1
                    order.hold(entry)
                    continue
                if self._attempt(entry, None, result):
                    result.applied += 1
                    result.purged += entry.op is OutboxOp.PURGE_SCOPE
                    if entry.id is not None:
                        done.append(entry.id)
                else:
                    order.hold(entry)
            if done:
                self._complete(done)
            if heartbeat is not None:
                heartbeat()
            if result.interrupted or len(page) < self.config.batch:
                return
            after = page[-1].id

    def run(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """The periodic drain as a job (`memsvc.jobs` Handler): stops when the runner stops."""
        return self.drain(cancelled=ctx.cancelled, heartbeat=ctx.heartbeat).as_dict()

    # -- dead letters and numbers ---------------------------------------------------------
    def revive(self, ids: Sequence[int] | None = None, *, tenant: str | None = None) -> int:
        """Dead letters (these, or all; of one tenant, or any) are retried from now with a fresh set
        of attempts, by the next drain."""
        return self.records.revive_outbox(ids, tenant=tenant)

    def dead(self, tenant: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Dead letters, newest first: one tenant's (the admin UI), or all (an operator)."""
        return self.records.dead_outbox(limit, tenant=tenant)

    def stats(self) -> dict[str, Any]:
        """`pending`, `retrying`, `dead` and `oldest_age_s` (seconds the oldest live entry has waited)."""
        return self.records.outbox_stats(utcnow())

    # -- internals ------------------------------------------------------------------------
    def _ops_now(self) -> list[OutboxOp]:
        return sorted(GRAPH_OPS) if self.config.defer_graph else []

    def _attempt(self, entry: OutboxEntry, embeddings: Mapping[str, np.ndarray] | None,
                 result: DrainResult | None = None) -> bool:
        try:
            self.indexer.apply(entry, embeddings)
        except Exception as exc:  # a derived store failed: the entry waits for its retry
            error = f"{type(exc).__name__}: {exc}"
            log.warning("outbox entry %s (%s) attempt %d failed: %s", entry.id, entry.op, entry.attempts + 1, error)
            dead = self._fail(entry, error)
            if result is not None:
                result.failed += 1
                result.dead += int(dead)
                result.errors.append(error)
            return False
        return True

    def _fail(self, entry: OutboxEntry, error: str) -> bool:
        """Record the failure; True when the entry is now a dead letter."""
        if entry.id is None:
            return False
        attempts = entry.attempts + 1
        retry_at: datetime | None = None
        if attempts < self.config.max_attempts:
            delay = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (attempts - 1))
            retry_at = utcnow() + timedelta(seconds=delay)
        try:
            self.records.fail_outbox(entry.id, error, retry_at=retry_at)
        except Exception as exc:  # the record store is down too: the entry stays due as it was
            log.warning("could not record the failure of outbox entry %s: %s", entry.id, exc)
        return retry_at is None

    def _complete(self, ids: list[int]) -> None:
        try:
            self.records.complete_outbox(ids)
        except Exception as exc:  # applied but not marked: the drain applies them again (harmless)
            log.warning("could not mark %d outbox entries done: %s", len(ids), exc)
