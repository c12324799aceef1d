"""Consolidation jobs on the one job runner: episode digests, near-duplicate merging, the user profile.

Each job works on one user scope and is idempotent and resumable:

* `lifecycle.digest` — every episode of the scope with turns no digest covers yet (closed, or idle
  for `MEMSVC_LIFECYCLE__IDLE_S`) gets the `episode-digest` card applied to its stored turns; the new
  digest and the episode's `digest_turns` commit together, so a rerun skips what was done, and an
  older digest of a grown episode is superseded by the new one. Submitted by the write path when an
  episode closes and by the periodic sweep; when it has digested something it submits the next two.
* `lifecycle.merge` — active derived memories of one type whose vectors are within
  `MEMSVC_LIFECYCLE__MERGE_THRESHOLD` become one canonical memory (the oldest): it gains the others'
  sources (`source_ids` unioned, `_merged` lists them, a new version records the change) and the
  others are superseded by it, so their history stays. Incremental: only memories changed since the
  scope's merge mark are compared, with each other and, through the vector index, with the rest.
* `lifecycle.profile` — one refined memory per user listing its active facts, preferences and
  relationships (`PROFILE_SKILLS`); a fact superseded by a newer value of its slot is no longer
  active, so contradictions resolve by supersession; a changed profile supersedes the previous one.

Merging and the profile change memories a write resolves against: their commits guard the scope
version they read (as the write path does), so a concurrent write and a job never both change what
the other planned against; the job plans again instead. A digest only adds a memory (and supersedes
its episode's older digest): it commits unguarded, so digests of a long write stream (one per closed
episode) never make its writes plan again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from memsvc.config import LifecycleConfig
from memsvc.errors import Conflict, ScopeChanged
from memsvc.indexer import Indexer
from memsvc.jobs import JobContext, JobRunner
from memsvc.models import (
    DIGEST_KEY,
    EPISODE_KEY,
    MERGED_KEY,
    PROFILE_KEY,
    ChangeKind,
    Episode,
    EventLog,
    Job,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    OutboxEntry,
    OutboxOp,
    utcnow,
)
from memsvc.outbox import Outbox
from memsvc.ports import RecordStore, VectorFilter, VectorsOf
from memsvc.skills.runtime import RuntimeRun, SkillRuntime
from memsvc.skills.types import OpKind, SkillContext, Span

log = logging.getLogger(__name__)

DIGEST_JOB, MERGE_JOB, PROFILE_JOB, SWEEP_JOB = "lifecycle.digest", "lifecycle.merge", "lifecycle.profile", "lifecycle.sweep"
JOB_KINDS = (DIGEST_JOB, MERGE_JOB, PROFILE_JOB, SWEEP_JOB)
PROFILE_SKILLS = frozenset({"capture-personal-facts", "capture-preferences", "capture-relationships"})
DERIVED = (MemoryType.SEMANTIC, MemoryType.REFINED, MemoryType.PROCEDURAL)
ATTEMPTS = 5  # plans per commit when concurrent writes keep changing the scope
MERGE_NEIGHBOURS = 10  # nearest memories of the same type looked up in the vector index per changed memory
MERGE_BATCH = 256  # changed memories embedded (or taken from the writer's cache) at a time
MARK_SLACK = timedelta(seconds=60)  # changes this far behind the merge mark are compared again (clock skew)
ACTOR = "lifecycle"
TURN_BATCH = 200  # episodes whose turns one query loads
PROFILE_SEEK = 4  # the profile job reads this many times the profile's size of top facts (and grows it so)


def structural(cube: MemoryCube) -> bool:
    """A digest or a profile: consolidation output, never merged or listed in a profile itself."""
    return bool(cube.metadata.get(DIGEST_KEY) or cube.metadata.get(PROFILE_KEY))


def merged_at(cube: MemoryCube, mark: datetime | None) -> bool:
    """The canonical memory of a merge committed at `mark`: its text is unchanged, and its pairs were
    all compared by that run, so the next run (within the slack) need not compare it again."""
    return mark is not None and cube.updated_at == mark and MERGED_KEY in cube.metadata


def merge_groups(cubes: Sequence[MemoryCube], vectors: np.ndarray, threshold: float,
                 extra: Sequence[tuple[int, int]] = (), block: int = 1024) -> list[list[int]]:
    """Indices of near-duplicates (same type, cosine >= threshold, transitively), oldest first;
    only groups of two or more. `vectors` are the first `len(vectors)` cubes' (unit rows), compared
    with each other `block` rows at a time (memory grows with block x n, not n x n); `extra`: pairs
    known to be near (found in the vector index), which may name the cubes without vectors."""
    n = len(cubes)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        if cubes[i].type is cubes[j].type:
            parent[root(i)] = root(j)

    for lo in range(0, len(vectors) if len(vectors) > 1 else 0, block):
        sims = vectors[lo:lo + block] @ vectors.T
        for i, j in zip(*np.nonzero(sims >= threshold), strict=True):
            if lo + int(i) < int(j):
                join(lo + int(i), int(j))
    for i, j in extra:
        join(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = [sorted(g, key=lambda i: (cubes[i].created_at, cubes[i].id)) for g in groups.values() if len(g) > 1]
    return sorted(out, key=lambda g: g[0])


def profile_content(facts: Sequence[MemoryCube], limit: int) -> tuple[str, list[MemoryCube]]:
    """The profile's text and the facts it lists: the most important first (newest on ties), one
    per single-valued slot, one per wording."""
    ranked = sorted(facts, key=lambda c: (-c.importance, -(c.valid_from or c.created_at).timestamp(), c.id))
    kept: list[MemoryCube] = []
    slots: set[str] = set()
    texts: set[str] = set()
    for c in ranked:
        slot = c.metadata.get("_slot")
        key = c.content.strip().lower()
        if (slot and slot in slots) or key in texts:
            continue
        if slot:
            slots.add(str(slot))
        texts.add(key)
        kept.append(c)
        if len(kept) == limit:
            break
    kept.sort(key=lambda c: (c.valid_from or c.created_at, c.id))
    return "\n".join(c.content.strip() for c in kept), kept


class Consolidator:
    def __init__(
        self, records: RecordStore, indexer: Indexer, outbox: Outbox, runtime: SkillRuntime,
        config: LifecycleConfig, vectors_of: VectorsOf,
    ) -> None:
        self.records = records
        self.indexer = indexer
        self.outbox = outbox
        self.runtime = runtime
        self.config = config
        self.vectors_of = vectors_of
        self.jobs: JobRunner | None = None

    def register(self, jobs: JobRunner) -> None:
        self.jobs = jobs
        jobs.register(DIGEST_JOB, self.digest_job, max_attempts=3)
        jobs.register(MERGE_JOB, self.merge_job, max_attempts=3)
        jobs.register(PROFILE_JOB, self.profile_job, max_attempts=3)
        jobs.register(SWEEP_JOB, self.sweep_job, max_attempts=1)
        jobs.every(SWEEP_JOB, self.config.interval_s, SWEEP_JOB)

    # -- submitting ------------------------------------------------------------------------
    def submit(self, tenant: str, user_id: str, kind: str, key: str) -> Job | None:
        """Queue `kind` for the scope once per `key` (what the scope looked like when it was asked)."""
        if self.jobs is None:
            return None
        return self.jobs.submit(tenant, kind, {"user_id": user_id}, job_id=f"{kind}:{tenant}:{user_id}:{key}")

    def episodes_closed(self, tenant: str, user_id: str, episodes: list[int]) -> None:
        """The write path's hook: a write closed these episodes."""
        try:
            self.submit(tenant, user_id, DIGEST_JOB, f"closed-{max(episodes)}")
        except Exception as exc:  # the periodic sweep finds the episodes anyway
            log.warning("could not queue the digest of %s/%s: %s", tenant, user_id, exc)

    def due(self, now_idle: bool = False) -> dict[tuple[str, str], list[Episode]]:
        """Episodes waiting for a digest, by scope (`now_idle`: every open episode counts as idle)."""
        idle = utcnow() + timedelta(seconds=1) if now_idle else utcnow() - timedelta(seconds=self.config.idle_s)
        by_scope: dict[tuple[str, str], list[Episode]] = {}
        for ep in self.records.undigested_episodes(idle):
            by_scope.setdefault((ep.tenant, ep.user_id), []).append(ep)
        return by_scope

    def sweep_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """Periodic: queue the digest of every scope with episodes waiting (one job per scope and state)."""
        queued = 0
        for (tenant, user_id), eps in self.due().items():
            ctx.check()
            last = max(eps, key=lambda e: e.episode)
            self.submit(tenant, user_id, DIGEST_JOB, f"{last.episode}-{last.turns}")
            queued += 1
        return {"scopes": queued}

    # -- digests ---------------------------------------------------------------------------
    def digest_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        tenant, user_id = job.tenant, str(job.request["user_id"])
        return self.digest_scope(tenant, user_id, ctx, idle=bool(job.request.get("idle")))

    def digest_scope(self, tenant: str, user_id: str, ctx: JobContext | None = None, *, idle: bool = False) -> dict[str, Any]:
        """Digest every waiting episode of the scope, one commit each; then queue merge and profile."""
        idle_before = utcnow() + timedelta(seconds=1) if idle else utcnow() - timedelta(seconds=self.config.idle_s)
        written = noops = 0
        done: set[tuple[int, int]] = set()  # (episode, turns) tried: a rerun of the query never repeats one
        while batch := [ep for ep in self.records.undigested_episodes(idle_before, TURN_BATCH, scope=(tenant, user_id))
                        if (ep.episode, ep.turns) not in done]:
            done.update((ep.episode, ep.turns) for ep in batch)
            by_episode: dict[int, list[MemoryCube]] = {}
            for turn in self.records.episode_turns(tenant, user_id, [ep.episode for ep in batch]):
                by_episode.setdefault(int(turn.metadata[EPISODE_KEY]), []).append(turn)
            for ep in batch:
                if ctx is not None:
                    ctx.check()
                if self._digest_episode(tenant, user_id, ep, by_episode.get(ep.episode, [])):
                    written += 1
                else:
                    noops += 1
        if written:
            version = self.records.scope_version(tenant, user_id)
            for kind in (MERGE_JOB, PROFILE_JOB):
                self.submit(tenant, user_id, kind, str(version))
        return {"digests": written, "noops": noops}

    def _digest_episode(self, tenant: str, user_id: str, ep: Episode, turns: list[MemoryCube]) -> bool:
        ids = [c.source_ids[0] for c in turns if c.source_ids]
        messages = {m.id: m for m in self.records.get_messages(tenant, user_id, ids)}
        importance = {c.source_ids[0]: c.importance for c in turns if c.source_ids}
        spans = [Span(m.id, m.role, m.content, m.timestamp or m.created_at, name=m.name, episode=ep.episode,
                      index=i, importance=importance.get(m.id, 0.5))
                 for i, m in enumerate(messages[i] for i in ids if i in messages)]
        run = RuntimeRun()
        self.runtime.episode(spans, run, SkillContext(spans=spans))
        new = [self._digest_cube(op.content, list(op.source_ids), op.skill, tenant, user_id, ep, spans)
               for op in run.operations if op.op is OpKind.INSERT]
        old = self.records.get_memory(tenant, ep.digest_id) if ep.digest_id else None
        try:
            self._commit_digest(tenant, user_id, ep, new, old, run)
        except Conflict:  # another run (a job, the sweep's, a settle) digested the episode meanwhile
            return False
        return bool(new)

    @staticmethod
    def _digest_cube(content: str, sources: list[str], skill: str, tenant: str, user_id: str, ep: Episode,
                     spans: Sequence[Span]) -> MemoryCube:
        stated = [s for s in spans if s.message_id in set(sources)]
        when = spans[0].timestamp if spans else ep.started_at
        importance = max((s.importance for s in stated), default=0.5)
        return MemoryCube(
            tenant=tenant, user_id=user_id, session_id=ep.session_id, type=MemoryType.SEMANTIC, content=content,
            source_ids=sources, event_time=when, valid_from=when, importance=round(importance, 4), written_by=skill,
            metadata={EPISODE_KEY: ep.episode, DIGEST_KEY: True},
        )

    def _commit_digest(self, tenant: str, user_id: str, ep: Episode, new: list[MemoryCube], old: MemoryCube | None,
                       run: RuntimeRun) -> None:
        """Unguarded by the scope: a digest changes nothing a write resolves against (it only adds a
        memory, and supersedes the episode's own older digest), so it leaves the scope version alone
        and never makes a concurrent write plan again. Turns that arrive meanwhile leave
        `digest_turns` behind `turns`, so the episode is digested again. Guarded by the episode row:
        of two runs digesting one episode at once, one commits (`Conflict` for the other)."""
        embeddings: dict[str, np.ndarray] = {}
        if new:
            for cube, vec in zip(new, self.indexer.embed(new), strict=True):
                cube.embedding_model = self.indexer.embedder.model_name
                embeddings[cube.id] = vec
        superseded = old is not None and old.status is MemoryStatus.ACTIVE and bool(new)
        entries = []
        if new:
            entries.append(OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS,
                                       payload={"user_id": user_id, "ids": [c.id for c in new]}))
        if superseded:
            assert old is not None
            old.status, old.superseded_by, old.version, old.updated_at = (
                MemoryStatus.SUPERSEDED, new[0].id, old.version + 1, utcnow())
            entries.append(OutboxEntry(tenant=tenant, op=OutboxOp.SET_STATUS, payload={"user_id": user_id, "ids": [old.id]}))
        with self.records.unit_of_work() as uow:
            # First: the episode row orders concurrent runs, and only the first commits a digest.
            uow.mark_digested(tenant, user_id, ep.episode, ep.turns, new[0].id if new else None,
                              expected=ep.digest_turns)
            uow.insert_memories(new, actor=ACTOR)
            if superseded:
                assert old is not None
                uow.save_memory(old, ChangeKind.SUPERSEDE, actor=ACTOR)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=user_id, kind="lifecycle.digest", actor=ACTOR, payload={
                "episode": ep.episode, "turns": ep.turns, "written": [c.id for c in new],
                "superseded": [old.id] if superseded and old is not None else [],
                "skills": {k: v.as_log() for k, v in run.skills.items()},
            })])
        self.outbox.deliver(entries, embeddings)

    # -- merging ---------------------------------------------------------------------------
    def merge_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        return self.merge_scope(job.tenant, str(job.request["user_id"]), ctx)

    def merge_scope(self, tenant: str, user_id: str, ctx: JobContext | None = None, *,
                    full: bool = False) -> dict[str, Any]:
        """Merge the near-duplicates among the scope's active derived memories. Only what changed
        since the scope's mark (`scopes.merged_through`, less `MARK_SLACK`) is compared: with each
        other directly, and with the rest of the scope through the vector index (its `MERGE_NEIGHBOURS`
        nearest of the same type); pairs of unchanged memories were compared by an earlier run. The
        mark then moves to now, in the commit that merges (which guards the scope version read) or,
        with nothing to merge, only while the scope is still at that version: no change can have
        committed unseen in between. The slack covers the clocks of other nodes. `full`, or no mark
        yet (a new scope, an import), compares every active derived memory the same way."""
        for _ in range(ATTEMPTS):
            version = self.records.scope_version(tenant, user_id)
            mark = None if full else self.records.merge_mark(tenant, user_id)
            since = mark - MARK_SLACK if mark is not None else None
            changed = [c for c in self.records.changed_memories(tenant, user_id, since, DERIVED)
                       if not structural(c) and not merged_at(c, mark)]
            groups = self._near_duplicates(tenant, user_id, changed, ctx)
            if not groups:
                if changed or mark is None:
                    with self.records.unit_of_work() as uow:
                        uow.set_merge_mark(tenant, user_id, utcnow(), expected=version)
                return {"merged": 0, "groups": 0, "compared": len(changed)}
            try:
                merged = self._commit_merge(tenant, user_id, version, groups)
            except ScopeChanged:
                continue
            return {"merged": merged, "groups": len(groups), "compared": len(changed)}
        raise ScopeChanged(f"user {user_id} kept changing while near-duplicates were merged")

    def _near_duplicates(self, tenant: str, user_id: str, changed: list[MemoryCube],
                         ctx: JobContext | None) -> list[list[MemoryCube]]:
        """Groups of near-duplicates that hold at least one changed memory, oldest first."""
        if not changed:
            return []
        threshold = self.config.merge_threshold
        index = {c.id: i for i, c in enumerate(changed)}
        pairs: list[tuple[str, str]] = []
        vectors: list[np.ndarray] = []
        for lo in range(0, len(changed), MERGE_BATCH):
            if ctx is not None:
                ctx.check()
            batch = changed[lo:lo + MERGE_BATCH]
            vecs = self.vectors_of(batch)
            vectors.append(vecs)
            for cube, vec in zip(batch, vecs, strict=True):
                flt = VectorFilter(tenant=tenant, user_id=user_id, types=[cube.type], statuses=[MemoryStatus.ACTIVE])
                pairs += [(cube.id, hit) for hit, score in self.indexer.vectors.search(vec.tolist(), flt, MERGE_NEIGHBOURS)
                          if hit != cube.id and score >= threshold]
        others = [i for i in dict.fromkeys(b for _, b in pairs) if i not in index]
        cubes = list(changed)
        for cube in self.records.get_memories(tenant, others):  # the index's view may lag: SQL decides
            if cube.status is MemoryStatus.ACTIVE and cube.type in DERIVED and not structural(cube):
                index[cube.id] = len(cubes)
                cubes.append(cube)
        extra = [(index[a], index[b]) for a, b in pairs if b in index]
        groups = merge_groups(cubes, np.concatenate(vectors), threshold, extra)
        return [[cubes[i] for i in g] for g in groups]

    def _commit_merge(self, tenant: str, user_id: str, version: int | None, groups: list[list[MemoryCube]]) -> int:
        now = utcnow()
        saves: list[tuple[MemoryCube, ChangeKind]] = []
        for group in groups:
            canonical, rest = group[0], group[1:]
            sources = list(dict.fromkeys(s for c in group for s in c.source_ids))
            canonical.source_ids = sources
            canonical.metadata = {**canonical.metadata,
                                  MERGED_KEY: sorted({*canonical.metadata.get(MERGED_KEY, []), *(c.id for c in rest)})}
            canonical.importance = max(c.importance for c in group)
            canonical.version += 1
            canonical.updated_at = now
            saves.append((canonical, ChangeKind.UPDATE))
            for c in rest:
                c.status, c.superseded_by, c.version, c.updated_at = MemoryStatus.SUPERSEDED, canonical.id, c.version + 1, now
                saves.append((c, ChangeKind.SUPERSEDE))
        payload = {"user_id": user_id, "ids": [c.id for c, _ in saves]}
        entries = [OutboxEntry(tenant=tenant, op=OutboxOp.SET_STATUS, payload=payload)]
        with self.records.unit_of_work() as uow:
            uow.guard_scope(tenant, user_id, version)
            for cube, change in saves:
                uow.save_memory(cube, change, actor=ACTOR)
            uow.set_merge_mark(tenant, user_id, now, expected=None)  # its own changes need no comparing again
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=user_id, kind="lifecycle.merge", actor=ACTOR, payload={
                "groups": [[c.id for c in g] for g in groups]})])
        self.outbox.deliver(entries)
        return sum(len(g) - 1 for g in groups)

    # -- the profile -----------------------------------------------------------------------
    def profile_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        return self.profile_scope(job.tenant, str(job.request["user_id"]))

    def profile_scope(self, tenant: str, user_id: str) -> dict[str, Any]:
        for _ in range(ATTEMPTS):
            version = self.records.scope_version(tenant, user_id)
            # the job is the only writer of memories written by ACTOR: the active one is the profile
            current = next((c for c in self.records.ranked_memories(tenant, user_id, [ACTOR], 8)
                            if c.metadata.get(PROFILE_KEY)), None)
            content, listed = self._profile_of(tenant, user_id)
            if not content or (current is not None and current.content == content):
                return {"profile": current.id if current else None, "changed": False}
            try:
                new = self._commit_profile(tenant, user_id, version, content, listed, current)
            except ScopeChanged:
                continue
            return {"profile": new.id, "changed": True, "facts": len(listed)}
        raise ScopeChanged(f"user {user_id} kept changing while the profile was built")

    def _profile_of(self, tenant: str, user_id: str) -> tuple[str, list[MemoryCube]]:
        """The profile's text and facts, read from the top of the scope's facts (the most important
        first, as the profile ranks them): a few times the profile's size, more only while one slot or
        wording repeats so often that too few are left; never the whole scope."""
        limit = self.config.profile_max_facts
        fetch = limit * PROFILE_SEEK
        while True:
            ranked = self.records.ranked_memories(tenant, user_id, sorted(PROFILE_SKILLS), fetch)
            content, listed = profile_content([c for c in ranked if not structural(c)], limit)
            if len(listed) == limit or len(ranked) < fetch:
                return content, listed
            fetch *= PROFILE_SEEK

    def _commit_profile(self, tenant: str, user_id: str, version: int | None, content: str,
                        listed: list[MemoryCube], current: MemoryCube | None) -> MemoryCube:
        now = utcnow()
        new = MemoryCube(
            tenant=tenant, user_id=user_id, type=MemoryType.REFINED, content=content,
            source_ids=list(dict.fromkeys(s for c in listed for s in c.source_ids)),
            event_time=max((c.event_time or c.created_at for c in listed), default=now), valid_from=now,
            importance=round(max((c.importance for c in listed), default=0.5), 4), written_by=ACTOR,
            metadata={PROFILE_KEY: True, "_facts": [c.id for c in listed]},
            embedding_model=self.indexer.embedder.model_name,
        )
        embeddings = {new.id: self.indexer.embed([new])[0]}
        entries = [OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS, payload={"user_id": user_id, "ids": [new.id]})]
        if current is not None:
            current.status, current.superseded_by, current.valid_to = MemoryStatus.SUPERSEDED, new.id, now
            current.version += 1
            current.updated_at = now
            entries.append(OutboxEntry(tenant=tenant, op=OutboxOp.SET_STATUS, payload={"user_id": user_id, "ids": [current.id]}))
        with self.records.unit_of_work() as uow:
            uow.guard_scope(tenant, user_id, version)
            uow.insert_memories([new], actor=ACTOR)
            if current is not None:
                uow.save_memory(current, ChangeKind.SUPERSEDE, actor=ACTOR)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=user_id, kind="lifecycle.profile", actor=ACTOR, payload={
                "profile": new.id, "facts": [c.id for c in listed], "superseded": [current.id] if current else []})])
        self.outbox.deliver(entries, embeddings)
        return new

    # -- for the evaluation runner and tests ---------------------------------------------------
    def settle(self, tenant: str | None = None, timeout_s: float = 600.0) -> None:
        """Queue the digest of every waiting episode now (open ones included), then wait until no
        lifecycle job is left: what a benchmark run needs before its questions."""
        for (t, user_id), eps in self.due(now_idle=True).items():
            if tenant is not None and t != tenant:
                continue
            last = max(eps, key=lambda e: e.episode)
            if self.jobs is not None:
                self.jobs.submit(t, DIGEST_JOB, {"user_id": user_id, "idle": True},
                                 job_id=f"{DIGEST_JOB}:{t}:{user_id}:settle-{last.episode}-{last.turns}")
        if self.jobs is not None:
            for kind in (DIGEST_JOB, MERGE_JOB, PROFILE_JOB):
                self.jobs.wait_idle(timeout_s, kind=kind)


__all__ = ["DIGEST_JOB", "JOB_KINDS", "MERGE_JOB", "PROFILE_JOB", "SWEEP_JOB", "Consolidator", "merge_groups", "merged_at",
           "profile_content", "structural"]
