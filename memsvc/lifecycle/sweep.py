"""The `retention.sweep` job: hold each scope (and tenant) to its budget of active memories.

Runs periodically (`JobRunner.every`, once per `MEMSVC_RETENTION__INTERVAL_S` across all nodes, over
every scope) and whenever a write pushes a scope over budget (one job per scope per
`__TRIGGER_S` window: an idempotent job id). Over budget, the lowest-ranked active memories move to
`archived`: never deleted, a version says why (`_retention` metadata: policy, score, budget), the
vector payload's status follows through the outbox so default recall leaves them out, and a PATCH
`status: active` (REST or admin) restores them. Rerunning a sweep is harmless: a scope within budget
is left alone; a memory changed meanwhile (version conflict) is skipped and judged again next time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memsvc.config import RetentionConfig
from memsvc.errors import Conflict
from memsvc.learn.second import DIM as SECOND_DIM
from memsvc.learn.second import ROWS_MODEL, SecondRows
from memsvc.models import (
    RETENTION_KEY,
    SYSTEM_TENANT,
    ChangeKind,
    EventLog,
    Job,
    JobState,
    MemoryCube,
    MemoryStatus,
    OutboxEntry,
    OutboxOp,
    as_utc,
    utcnow,
)
from memsvc.outbox import Outbox
from memsvc.ports import RecordStore, VectorsOf

from .retention import BetaLogit, ScopeStream, keep_scores, protected_mask, select_archive

if TYPE_CHECKING:
    from memsvc.graph.service import NameVectors

log = logging.getLogger(__name__)

SWEEP_JOB = "retention.sweep"
CHUNK = 100  # archived per transaction
_CACHE = 20_000  # embeddings kept between sweeps (memory id + version)
SECOND_CHUNK = 256  # e5 rows embedded and stored together (~7 s on 2 cores)
SECOND_KEY = ROWS_MODEL  # the model part of the stored e5 rows' keys (`name_vectors`), shared with the read gate


@dataclass
class SweepStats:
    runs: int = 0
    archived: int = 0
    seconds: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)


def chain_neighbours(cubes: Sequence[MemoryCube]) -> tuple[np.ndarray, np.ndarray]:
    """Each memory's previous and following memory (stream positions, -1 for none) of the same type
    and session: a turn's neighbours are the turns before and after it in its conversation, not the
    facts and digests written between them (the retention model learned from turn streams)."""
    previous = np.full(len(cubes), -1, dtype=np.int64)
    following = np.full(len(cubes), -1, dtype=np.int64)
    last: dict[tuple[str, str | None], int] = {}
    for i, c in enumerate(cubes):
        key = (c.type.value, c.session_id)
        j = last.get(key)
        if j is not None:
            previous[i], following[j] = j, i
        last[key] = i
    return previous, following


SecondEmbed = Callable[[Sequence[str]], np.ndarray]
"""texts -> (n, d) rows of the second embedding the retention model's evidence head reads."""


def _cached(cache: OrderedDict[tuple[str, Any], np.ndarray], cubes: Sequence[MemoryCube],
            compute: Callable[[list[MemoryCube]], Any], dim: int,
            key: Callable[[MemoryCube], tuple[str, Any]] = lambda c: (c.id, c.version)) -> np.ndarray:
    """Rows of `compute` per cube, by `key` (memory id and version) through an LRU `cache` of `_CACHE` rows."""
    keys = [key(c) for c in cubes]
    missing = [i for i, k in enumerate(keys) if k not in cache]
    if missing:
        vecs = compute([cubes[i] for i in missing])
        for i, v in zip(missing, vecs, strict=True):
            cache[keys[i]] = np.asarray(v, dtype=np.float32)
    out = np.stack([cache[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
    for k in keys:
        cache.move_to_end(k)
    while len(cache) > _CACHE:
        cache.popitem(last=False)
    return out


class RetentionSweeper:
    def __init__(self, records: RecordStore, vectors_of: VectorsOf, dim: int, outbox: Outbox, config: RetentionConfig,
                 beta_logit: BetaLogit | None = None, model_info: dict[str, Any] | None = None,
                 second: SecondEmbed | None = None, stored: NameVectors | None = None) -> None:
        self.records = records
        self.vectors_of = vectors_of  # the index's vectors where current, the rest embedded
        self.dim = dim
        self.outbox = outbox
        self.config = config
        self.beta_logit = beta_logit
        self.model_info = model_info
        self.second = second  # the model's second embedder (None: its evidence head reads none)
        self.stored = stored  # a scope's e5 rows outside the process (SQL), read before embedding
        self._rows = SecondRows(stored)  # read, embedded with `second` where missing, stored
        self.stats = SweepStats()
        self._lock = threading.Lock()
        self._vectors: OrderedDict[tuple[str, Any], np.ndarray] = OrderedDict()
        self._seconds: OrderedDict[tuple[str, Any], np.ndarray] = OrderedDict()

    # -- configuration -------------------------------------------------------------------
    @property
    def user_budget(self) -> int | None:
        return self.config.max_active_per_user or None

    @property
    def tenant_budget(self) -> int | None:
        return self.config.max_active_per_tenant or None

    @property
    def enabled(self) -> bool:
        return self.config.policy != "keep_all" and (self.user_budget is not None or self.tenant_budget is not None)

    @property
    def effective_policy(self) -> str:
        """The policy that ranks: `learned` without a model is `importance`."""
        return "importance" if self.config.policy == "learned" and self.beta_logit is None else self.config.policy

    def trigger(self, jobs: Any, tenant: str, user_id: str | None, request: dict[str, Any]) -> Job:
        """Queue a sweep of the scope (or, `user_id` None, of the tenant) unless one is waiting or running.

        Job ids are `retention.sweep:<scope>:<window>:<n>`: while sweep n of the window is unfinished,
        every write of the scope gets that job back (idempotent); once it finished, the next write
        queues n + 1, so the write that goes over budget after a sweep is never left waiting for the
        periodic one."""
        window = int(time.time() // self.config.trigger_s)
        who = hashlib.sha256(user_id.encode()).hexdigest()[:16] if user_id is not None else "tenant"
        for n in range(1000):
            job_id = f"{SWEEP_JOB}:{who}:{window}:{n}"
            existing = self.records.get_job(tenant, job_id)
            if existing is None:
                job: Job = jobs.submit(tenant, SWEEP_JOB, request, job_id=job_id)
                return job
            if existing.state in (JobState.PENDING, JobState.RUNNING):
                return existing
        raise Conflict("too many retention sweeps in one trigger window")

    def over_budget(self, tenant: str, user_id: str) -> tuple[bool, bool]:
        """(scope over its budget, tenant over its budget)."""
        if not self.enabled:
            return False, False
        user = self.user_budget is not None and self.records.count_status(
            tenant, MemoryStatus.ACTIVE, user_id) > self.user_budget
        whole = self.tenant_budget is not None and self.records.count_status(
            tenant, MemoryStatus.ACTIVE) > self.tenant_budget
        return user, whole

    # -- the job -------------------------------------------------------------------------
    def run(self, job: Job, ctx: Any) -> dict[str, Any]:
        """A periodic job (system tenant) sweeps every scope of every tenant; a triggered one sweeps its
        scope (`user_id`) and, when `tenant` is set in the request, the tenant's budget."""
        started = time.monotonic()
        archived = 0
        scopes = 0
        if not self.enabled:
            return {"archived": 0, "policy": self.config.policy, "note": "no budget or keep_all"}
        if job.tenant == SYSTEM_TENANT:
            for tenant in self.records.tenants():
                for s in self.records.scope_stats(tenant):
                    ctx.check()
                    if self.user_budget is not None and sum(s.counts.values()) > self.user_budget:
                        archived += self.sweep_scope(tenant, s.user_id, self.user_budget, ctx)
                        scopes += 1
                if self.tenant_budget is not None:
                    archived += self.sweep_tenant(tenant, self.tenant_budget, ctx)
        else:
            user_id = job.request.get("user_id")
            if isinstance(user_id, str) and self.user_budget is not None:
                archived += self.sweep_scope(job.tenant, user_id, self.user_budget, ctx)
                scopes += 1
            if self.tenant_budget is not None and (job.request.get("tenant") or user_id is None):
                archived += self.sweep_tenant(job.tenant, self.tenant_budget, ctx)
        seconds = time.monotonic() - started
        result = {"archived": archived, "scopes": scopes, "policy": self.effective_policy,
                  "seconds": round(seconds, 4)}
        with self._lock:
            self.stats.runs += 1
            self.stats.archived += archived
            self.stats.seconds += seconds
            self.stats.durations.append(seconds)
            self.stats.last = {**result, "at": utcnow().isoformat(), "job_id": job.id}
        return result

    def drain_durations(self) -> list[float]:
        with self._lock:
            out, self.stats.durations = self.stats.durations, []
        return out

    # -- ranking -------------------------------------------------------------------------
    def _stream(self, cubes: Sequence[MemoryCube]) -> ScopeStream:
        created = np.array([as_utc(c.created_at).timestamp() for c in cubes])  # type: ignore[union-attr]
        last = []
        for i, c in enumerate(cubes):
            at = as_utc(c.last_accessed_at)
            # the stream position of the newest memory written when it was last recalled
            last.append(i if at is None else max(i, int(np.searchsorted(created, at.timestamp(), side="right")) - 1))
        need_vectors = self.effective_policy == "learned"
        emb = self._vectors_for(cubes) if need_vectors else np.zeros((len(cubes), 1), dtype=np.float32)
        previous, following = chain_neighbours(cubes) if need_vectors else (None, None)  # read by the model only
        second = self._second_for(cubes) if need_vectors and self.second is not None else None
        return ScopeStream(
            texts=[c.content for c in cubes], embeddings=emb,
            importance=np.array([c.importance for c in cubes], dtype=np.float32),
            access_count=np.array([c.access_count for c in cubes], dtype=np.float32),
            last_used=np.array(last, dtype=np.int64), previous=previous, following=following, second=second,
        )

    def _vectors_for(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        return _cached(self._vectors, cubes, self.vectors_of, self.dim)

    def _second_for(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        """The second embedding of each memory, by memory id and text (an archive or a restore changes
        the version, not the text): from the in-process cache, else from the scope's stored rows
        (`stored`: SQL, shared by the nodes, kept across restarts, deleted with the user), else
        embedded — once per text — and stored."""
        return _cached(self._seconds, cubes, self._embed_second, SECOND_DIM,
                       key=lambda c: (c.id, hashlib.sha256(c.content.encode()).hexdigest()[:16]))

    def _embed_second(self, cubes: Sequence[MemoryCube]) -> list[np.ndarray]:
        second = self.second
        assert second is not None
        found: dict[tuple[str, str, str], np.ndarray] = {}
        scopes: dict[tuple[str, str], list[str]] = {}
        for c in cubes:
            scopes.setdefault((c.tenant, c.user_id), []).append(c.content)
        for (tenant, user_id), texts in scopes.items():  # stored as it goes: a sweep cut short resumes there
            have = self._rows.rows(tenant, user_id, texts, chunk=SECOND_CHUNK, encode=second)
            found.update({(tenant, user_id, text): v for text, v in have.items()})
        return [found[(c.tenant, c.user_id, c.content)] for c in cubes]

    def rank(self, cubes: Sequence[MemoryCube]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(keep scores, protected mask or None, last-used positions) of `cubes` in stream order."""
        stream = self._stream(cubes)
        policy = self.effective_policy
        active = np.array([c.status is MemoryStatus.ACTIVE for c in cubes])
        scores = keep_scores(policy, stream, [c.id for c in cubes], beta_logit=self.beta_logit)
        if policy == "lru":  # recall times, not positions, so that recalls between two writes still order
            scores = np.array([(as_utc(c.last_accessed_at) or as_utc(c.created_at)).timestamp()  # type: ignore[union-attr]
                               for c in cubes])
        prot = None
        if policy == "learned":
            budget = int(active.sum())
            prot = protected_mask(stream, active, math.ceil(self.config.protect * min(budget, self.user_budget or budget)))
        return scores, prot, np.asarray(stream.last_used)

    def _scope(self, tenant: str, user_id: str) -> list[MemoryCube]:
        """The scope's active and archived memories as a stream: by write time, then (one request's
        memories share it) by the time they are about, then by id."""
        cubes = [c for c in self.records.iter_memories(tenant, user_id)
                 if c.status in (MemoryStatus.ACTIVE, MemoryStatus.ARCHIVED)]
        return sorted(cubes, key=lambda c: (as_utc(c.created_at), as_utc(c.event_time or c.valid_from or c.created_at),
                                            c.id))

    def sweep_scope(self, tenant: str, user_id: str, budget: int, ctx: Any) -> int:
        cubes = self._scope(tenant, user_id)
        active = np.array([c.status is MemoryStatus.ACTIVE for c in cubes], dtype=bool)
        if active.sum() <= budget:
            return 0
        scores, prot, used = self.rank(cubes)
        gone = select_archive(scores, active, budget, prot, used)
        return self._archive(tenant, [cubes[i] for i in gone], {int(i): float(scores[i]) for i in gone}, cubes,
                             f"user:{budget}", ctx)

    def sweep_tenant(self, tenant: str, budget: int, ctx: Any) -> int:
        """Over the tenant's budget: each scope's ranks are computed on its own stream; the lowest
        normalised ranks (0 = the scope's first to go) go first across scopes."""
        if self.records.count_status(tenant, MemoryStatus.ACTIVE) <= budget:
            return 0
        pooled: list[tuple[float, MemoryCube, float]] = []
        for s in self.records.scope_stats(tenant):
            ctx.check()
            cubes = self._scope(tenant, s.user_id)
            if not cubes:
                continue
            scores, prot, _ = self.rank(cubes)
            act = [i for i, c in enumerate(cubes) if c.status is MemoryStatus.ACTIVE]
            order = sorted(act, key=lambda i: (bool(prot[i]) if prot is not None else False, scores[i]))
            for r, i in enumerate(order):
                pooled.append((r / max(1, len(order)), cubes[i], float(scores[i])))
        over = len(pooled) - budget
        if over <= 0:
            return 0
        pooled.sort(key=lambda x: x[0])
        chosen = pooled[:over]
        return self._archive(tenant, [c for _, c, _ in chosen], {k: s for k, (_, _, s) in enumerate(chosen)},
                             [c for _, c, _ in chosen], f"tenant:{budget}", ctx, by_position=True)

    def _archive(self, tenant: str, chosen: Sequence[MemoryCube], scores: dict[int, float],
                 stream: Sequence[MemoryCube], budget: str, ctx: Any, *, by_position: bool = False) -> int:
        index = {c.id: i for i, c in enumerate(stream)}
        done = 0
        for start in range(0, len(chosen), CHUNK):
            ctx.check()
            batch = []
            for k, cube in enumerate(chosen[start:start + CHUNK], start=start):
                score = scores[k] if by_position else scores[index[cube.id]]
                cube = cube.model_copy(deep=True)
                cube.status = MemoryStatus.ARCHIVED
                cube.version += 1
                cube.updated_at = utcnow()
                cube.metadata[RETENTION_KEY] = {"policy": self.effective_policy, "score": round(score, 6),
                                                "budget": budget, "at": cube.updated_at.isoformat()}
                batch.append(cube)
            done += self._commit(tenant, batch)
        return done

    def _commit(self, tenant: str, cubes: list[MemoryCube]) -> int:
        """Archive `cubes` in one transaction; on a version conflict (a concurrent change) one by one,
        skipping those that changed."""
        try:
            self._save(tenant, cubes)
            return len(cubes)
        except Conflict:
            if len(cubes) == 1:
                return 0
        return sum(self._commit(tenant, [c]) for c in cubes)

    def _save(self, tenant: str, cubes: list[MemoryCube]) -> None:
        by_user: dict[str, list[str]] = {}
        for c in cubes:
            by_user.setdefault(c.user_id, []).append(c.id)
        entries = [OutboxEntry(tenant=tenant, op=OutboxOp.SET_STATUS, payload={"user_id": u, "ids": ids})
                   for u, ids in by_user.items()]
        with self.records.unit_of_work() as uow:
            for uid in sorted(by_user):
                uow.touch_scope(tenant, uid)
            for c in cubes:
                uow.save_memory(c, ChangeKind.ARCHIVE, actor=SWEEP_JOB)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=u, kind="memory.archive", actor=SWEEP_JOB,
                              payload={"memory_ids": ids, "policy": self.effective_policy}) for u, ids in by_user.items()])
        self.outbox.deliver(entries)
