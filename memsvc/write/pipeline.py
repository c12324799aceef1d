"""The write pipeline: messages in, cubes committed to SQL, derived stores indexed."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from memsvc.config import LifecycleConfig, Limits, OutboxConfig, SkillsConfig, WriteConfig
from memsvc.errors import InvalidInput, NotFound, PayloadTooLarge, ScopeChanged
from memsvc.gating import GateFallbacks
from memsvc.indexer import Indexer
from memsvc.learn.features import with_previous, write_features
from memsvc.lifecycle.episodes import Segmentation, SegmentParams, segment
from memsvc.models import (
    REASON_KEY,
    SLOT_KEY,
    ChangeKind,
    EpisodeState,
    EventLog,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    OutboxEntry,
    OutboxOp,
    StoredMessage,
    as_utc,
    new_id,
    utcnow,
)
from memsvc.outbox import Outbox
from memsvc.ports import GateModel, RecordStore, VectorFilter, VectorIndex
from memsvc.schemas import MessageIn, Skipped, WriteRequest, WriteResult
from memsvc.skills.offline import episodic_content
from memsvc.skills.runtime import RuntimeRun, SkillRuntime
from memsvc.skills.types import ExplicitOperation, Operation, OpKind, SkillContext, Span
from memsvc.write.operations import change_entries, stage_changes
from memsvc.write.scope import RecentVectors, ScopeView
from memsvc.write.stages import GateDecision, heuristic_gate

__all__ = ["WritePipeline", "assign_message_ids", "episodic_content"]

# A write plans against the scope version it read and commits only if it is still current; when
# another writer (thread or process) got in first, it plans again, at most this many times.
PLAN_ATTEMPTS = 8
UNGUARDED = -1  # `_Plan.scope_version` of a plan not made by `write` (commits whatever the version)


@dataclass
class _Plan:
    """What one request will change, built before anything is committed."""

    messages: list[StoredMessage] = field(default_factory=list)
    new: list[MemoryCube] = field(default_factory=list)
    superseded: list[MemoryCube] = field(default_factory=list)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    scope_version: int | None = UNGUARDED  # the scope version the plan was made against
    changed: list[tuple[MemoryCube, ChangeKind, Operation]] = field(default_factory=list)
    run: RuntimeRun = field(default_factory=RuntimeRun)
    declined: list[dict[str, Any]] = field(default_factory=list)
    segmentation: Segmentation | None = None


# Called after a write committed, with the episodes it closed: (tenant, user_id, episode numbers).
EpisodesClosed = Callable[[str, str, list[int]], None]


def segment_params(config: LifecycleConfig) -> SegmentParams:
    return SegmentParams(gap=timedelta(seconds=config.episode_gap_s), gamma=config.surprise_gamma,
                         min_turns=config.surprise_min_turns)


def assign_message_ids(req: WriteRequest) -> WriteRequest:
    """Give every message an id, so a retried or replayed request is idempotent."""
    if all(m.id is not None for m in req.messages):
        return req
    messages = [m if m.id is not None else m.model_copy(update={"id": new_id()}) for m in req.messages]
    return req.model_copy(update={"messages": messages})


class WritePipeline:
    def __init__(
        self, records: RecordStore, vectors: VectorIndex, indexer: Indexer,
        limits: Limits, config: WriteConfig, *, skills: SkillRuntime, skills_config: SkillsConfig | None = None,
        gate: GateModel | None = None, outbox: Outbox | None = None, lifecycle: LifecycleConfig | None = None,
        on_episodes_closed: EpisodesClosed | None = None, fallbacks: GateFallbacks | None = None,
    ) -> None:
        self.records = records
        self.fallbacks = fallbacks or GateFallbacks()
        self.segment_params = segment_params(lifecycle or LifecycleConfig())
        self.on_episodes_closed = on_episodes_closed
        self.skills = skills
        self.skills_config = skills_config or SkillsConfig()
        self.gate_model = gate
        self.vectors = vectors
        self.indexer = indexer
        self.outbox = outbox if outbox is not None else Outbox(records, indexer, OutboxConfig())
        self.limits = limits
        self.config = config
        self._recent = RecentVectors()
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def check_limits(self, req: WriteRequest) -> None:
        if len(req.messages) > self.limits.max_messages:
            raise PayloadTooLarge(
                f"at most {self.limits.max_messages} messages per request",
                details={"messages": len(req.messages)},
            )
        for i, m in enumerate(req.messages):
            if len(m.content) > self.limits.max_content_chars:
                raise PayloadTooLarge(
                    f"message content longer than {self.limits.max_content_chars} characters",
                    details={"index": i, "length": len(m.content)},
                )

    def _scope_lock(self, tenant: str, user_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[(tenant, user_id)]

    def write(
        self, tenant: str, req: WriteRequest, *, actor: str | None = None, only: list[str] | None = None,
    ) -> WriteResult:
        """Plan against the scope as SQL holds it, commit if nobody changed the scope meanwhile
        (else plan again), then apply the outbox entries (`memsvc.outbox`). `only` restricts the
        skills the controller may choose (ablations and training runs)."""
        self.check_limits(req)
        req = assign_message_ids(req)
        explicit = explicit_operations(req)
        if not self.outbox.config.defer_graph:
            # the graph parses these turns after the commit; start now, beside the embedding
            self.indexer.prefetch_graph([episodic_content(m.role, m.name, m.content) for m in req.messages])
        for attempt in range(PLAN_ATTEMPTS):
            # The lock spares this process's own writers the re-planning; other processes are kept
            # out by the version the commit checks.
            with self._scope_lock(tenant, req.user_id):
                version = self.records.scope_version(tenant, req.user_id)
                known = self.records.known_message_ids(tenant, req.user_id, [m.id for m in req.messages if m.id])
                fresh = [m for m in req.messages if m.id not in known]
                skipped = [Skipped(message_id=m.id, reason="duplicate message id") for m in req.messages if m.id in known and m.id]
                if not fresh and not explicit:
                    return WriteResult(written=[], skipped=skipped)
                plan = self._plan(tenant, req, fresh, explicit, only)
                plan.scope_version = version
                try:
                    entries = self._commit(tenant, req, plan, actor)
                except ScopeChanged:
                    if attempt == PLAN_ATTEMPTS - 1:
                        raise
                    continue
            self._recent.put(dict(plan.embeddings))
            self.outbox.deliver(entries, plan.embeddings)
            closed = plan.segmentation.closed if plan.segmentation is not None else []
            if closed and self.on_episodes_closed is not None:
                self.on_episodes_closed(tenant, req.user_id, closed)
            changed = [c.public() for c, _, _ in plan.changed]
            return WriteResult(written=[c.public() for c in plan.new], skipped=skipped,
                               **({"changed": changed} if explicit else {}))
        raise AssertionError("unreachable")  # pragma: no cover

    def _plan(
        self, tenant: str, req: WriteRequest, fresh: list[MessageIn], explicit: Sequence[ExplicitOperation] = (),
        only: Sequence[str] | None = None,
    ) -> _Plan:
        """segment -> episodic turns -> write gate -> skills chosen per span -> operations -> resolution."""
        plan = _Plan()
        now = utcnow()
        times = [as_utc(m.timestamp) or now for m in fresh]
        # Every turn's embedding first: segmentation measures surprise on it, the write gate scores
        # it, and the episodic cube of the turn reuses it.
        texts = [episodic_content(m.role, m.name, m.content) for m in fresh]
        vectors = self.indexer.embedder.embed(texts)
        state = self.records.episode_state(tenant, req.user_id) or EpisodeState(tenant=tenant, user_id=req.user_id)
        seg = segment(state, times, [req.session_id] * len(fresh), vectors, self.segment_params)
        plan.segmentation = seg
        signals = np.stack([write_features(m.role.value, m.content) for m in fresh]) if fresh else None
        if signals is not None:  # the next write's first turn reads this batch's last as its previous turn
            seg.state.last_signals = [round(float(x), 6) for x in signals[-1]]
        last = (None if state.last_vector is None or state.last_signals is None
                else (np.asarray(state.last_vector, dtype=np.float32), np.asarray(state.last_signals, dtype=np.float32)))
        spans: list[Span] = []
        for i, (m, when) in enumerate(zip(fresh, times, strict=True)):
            assert m.id is not None
            plan.messages.append(StoredMessage(
                tenant=tenant, user_id=req.user_id, id=m.id, role=m.role, content=m.content, name=m.name,
                session_id=req.session_id, agent_id=req.agent_id, timestamp=when,
            ))
            spans.append(Span(m.id, m.role, m.content, when, name=m.name, episode=seg.episodes[i], index=i,
                              turn=seg.positions[i]))
        self._check_explicit(tenant, req, explicit)
        context = SkillContext(spans=spans, existing=lambda span, k: self._existing(tenant, req.user_id, plan, span, k),
                               explicit=explicit)
        run = plan.run
        self.skills.turns(spans, run, context)
        turns = [self._cube(op, req, tenant, spans, now) for op in run.operations]
        run.operations.clear()
        position = {m.id: i for i, m in enumerate(fresh)}
        reembed = []
        for c in turns:
            at = position.get(c.source_ids[0]) if len(c.source_ids) == 1 else None
            if at is not None and c.content == texts[at]:
                plan.embeddings[c.id] = vectors[at]
                c.embedding_model = self.indexer.embedder.model_name
            else:
                reembed.append(c)
        self._embed(plan, reembed)
        plan.new.extend(turns)
        turn_of = {c.source_ids[0]: c for c in turns if c.type is MemoryType.EPISODIC and len(c.source_ids) == 1}
        span_vecs = list(vectors)
        gates = self._gates(fresh, span_vecs, signals, last)
        threshold = self.skills_config.gate_threshold
        for i, gate in enumerate(gates):
            spans[i] = replace(spans[i], importance=gate.importance)
            if spans[i].message_id in turn_of:
                turn_of[spans[i].message_id].importance = gate.importance
        eligible = [req.infer and g.extract and g.importance >= threshold for g in gates]
        matrix = np.stack(span_vecs) if span_vecs else np.zeros((0, self.indexer.embedder.dim), dtype=np.float32)
        self.skills.derive(spans, matrix, eligible, run, context, only=only)
        inserts = [op for op in run.operations if op.op is OpKind.INSERT]
        changes = [op for op in run.operations if op.op in (OpKind.UPDATE, OpKind.DELETE)]
        # A slotted fact goes first, so a sentence two skills restate keeps the fact that can supersede.
        inserts.sort(key=lambda op: op.slot is None)
        derived = [self._cube(op, req, tenant, spans, now) for op in inserts]
        if derived and not self.outbox.config.defer_graph:
            self.indexer.prefetch_graph([c.content for c in derived])  # parsed while they are embedded
        self._embed(plan, derived)
        before = len(plan.new)
        self._resolve(tenant, req.user_id, [(c, c.metadata.get(SLOT_KEY)) for c in derived], plan)
        kept = {c.id for c in plan.new[before:]}
        plan.declined += [{"skill": c.written_by, "source_ids": c.source_ids, "reason": "repeats a known memory"}
                          for c in derived if c.id not in kept]
        if changes:
            staged = stage_changes(changes, self.records, tenant, req.user_id, now)
            plan.changed = staged.changed
            plan.declined += [{"skill": op.skill, "source_ids": list(op.source_ids), "target_id": op.target_id,
                               "reason": reason} for op, reason in staged.declined]
            self._embed(plan, [c for c, change, _ in staged.changed if change is ChangeKind.UPDATE])
        return plan

    def _cube(self, op: Operation, req: WriteRequest, tenant: str, spans: list[Span], now: datetime) -> MemoryCube:
        """An INSERT operation as a cube: times from the first message it restates, importance from
        the gate's score of that message (the operation may raise it or set its own)."""
        by_id = {s.message_id: s for s in spans}
        first = next((by_id[s] for s in op.source_ids if s in by_id), None)
        when = first.timestamp if first is not None else now
        importance = op.importance
        if importance is None:
            base = first.importance if first is not None else 0.5
            importance = min(1.0, max(base + op.importance_boost, op.importance_floor))
        metadata = {**req.metadata, **op.metadata}
        if op.slot:
            metadata[SLOT_KEY] = op.slot
        if op.reason:
            metadata[REASON_KEY] = op.reason
        assert op.type is not None
        return MemoryCube(
            type=op.type, content=op.content, importance=round(importance, 4), metadata=metadata, written_by=op.skill,
            tenant=tenant, user_id=req.user_id, agent_id=req.agent_id, session_id=req.session_id,
            source_ids=list(op.source_ids), event_time=op.event_time or when, valid_from=when, created_at=now, updated_at=now,
        )

    def _existing(self, tenant: str, user_id: str, plan: _Plan, span: Span, k: int) -> list[MemoryCube]:
        """The stored derived memories nearest a span (what an LLM executor may update or delete)."""
        vec = next((plan.embeddings[c.id] for c in plan.new if c.source_ids == [span.message_id]
                    and c.type is MemoryType.EPISODIC), None)
        if vec is None:
            vec = self.indexer.embedder.embed([span.text])[0]
        flt = VectorFilter(tenant=tenant, user_id=user_id, statuses=[MemoryStatus.ACTIVE],
                           types=[MemoryType.SEMANTIC, MemoryType.REFINED, MemoryType.PROCEDURAL])
        return self.records.get_memories(tenant, [i for i, _ in self.vectors.search(vec.tolist(), flt, k)])

    def _check_explicit(self, tenant: str, req: WriteRequest, explicit: Sequence[ExplicitOperation]) -> None:
        """An agent's operation naming a memory outside its user scope, or citing a message that is
        neither in the request nor stored for the user, is bad input: nothing commits."""
        ids = [e.memory_id for e in explicit if e.memory_id]
        if ids:
            found = {c.id for c in self.records.get_memories(tenant, ids) if c.user_id == req.user_id}
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise NotFound("unknown memory ids for this user", details={"ids": unknown})
        cited = {s for e in explicit for s in e.source_ids} - {m.id for m in req.messages}
        if cited:
            missing = sorted(cited - self.records.known_message_ids(tenant, req.user_id, sorted(cited)))
            if missing:
                raise InvalidInput("operations cite unknown message ids", details={"source_ids": missing})

    def _embed(self, plan: _Plan, cubes: list[MemoryCube]) -> None:
        if not cubes:
            return
        for cube, vec in zip(cubes, self.indexer.embed(cubes), strict=True):
            plan.embeddings[cube.id] = vec
            cube.embedding_model = self.indexer.embedder.model_name

    @property
    def gate(self) -> GateModel | None:
        """The write head, None while the gate model does not serve it (asked at every use: a remote
        gate worker out of reach at start-up serves it once it answers)."""
        gate = self.gate_model
        return gate if gate is not None and gate.has("write") else None

    def _gates(self, messages: list[MessageIn], embeddings: list[np.ndarray], signals: np.ndarray | None,
               last: tuple[np.ndarray, np.ndarray] | None) -> list[GateDecision]:
        """The write gate per message: the learned memorability as importance when a gate model is
        loaded (which skills run stays the heuristic's choice), else the heuristic gate, as when a
        remote gate worker cannot be reached (`memsvc.gating`). The model reads each message with the
        one before it (`last`: the scope's last turn before this batch)."""
        heuristic = [heuristic_gate(m.role, m.content) for m in messages]
        gate = self.gate
        if gate is None or not messages or signals is None:
            return heuristic
        emb = np.stack(embeddings)
        p = self.fallbacks.call("write", lambda: gate.memorability(emb, with_previous(emb, signals, last)))
        if p is None:
            return heuristic
        return [GateDecision(round(float(x), 4), h.extract) for x, h in zip(p, heuristic, strict=True)]

    def _resolve(self, tenant: str, user_id: str, facts: list[tuple[MemoryCube, str | None]], plan: _Plan) -> None:
        """Drop repeats of known facts; let a newer value of a single-valued slot supersede the older.
        Known facts are what SQL holds (`memsvc.write.scope`), not what the index has seen yet."""
        accepted: list[MemoryCube] = []
        by_slot: dict[str, MemoryCube] = {}
        stored_old: dict[str, MemoryCube] = {}
        view = ScopeView(self.records, self.vectors, tenant, user_id, self.config.dedup_threshold,
                         self.indexer.embed, self._recent)
        for cube, slot in facts:
            vec = plan.embeddings[cube.id]
            if any(float(vec @ plan.embeddings[a.id]) >= self.config.dedup_threshold for a in accepted):
                continue
            if view.repeats(cube.type, vec):
                continue
            accepted.append(cube)
            if slot is None:
                continue
            current = cube
            rivals = [by_slot[slot]] if slot in by_slot else []
            for old in view.slot_holders(slot):
                rivals.append(stored_old.setdefault(old.id, old))
            for rival in rivals:
                if rival.status is not MemoryStatus.ACTIVE or rival is current:
                    continue
                newer, older = (current, rival) if _start(current) >= _start(rival) else (rival, current)
                _supersede(older, newer)
                if older.id in stored_old:
                    older.version += 1
                    plan.superseded.append(older)
                current = newer
            by_slot[slot] = current
        plan.new.extend(accepted)

    def _commit(self, tenant: str, req: WriteRequest, plan: _Plan, actor: str | None) -> list[OutboxEntry]:
        new_ids = [c.id for c in plan.new]
        entries = [OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS, payload={"user_id": req.user_id, "ids": new_ids})]
        if plan.superseded:
            entries.append(OutboxEntry(
                tenant=tenant, op=OutboxOp.SET_STATUS,
                payload={"user_id": req.user_id, "ids": [c.id for c in plan.superseded]},
            ))
        if self.config.extract_entities:
            entries.append(OutboxEntry(tenant=tenant, op=OutboxOp.INDEX_GRAPH, payload={"user_id": req.user_id, "ids": new_ids}))
        entries += change_entries(tenant, req.user_id, plan.changed)
        with self.records.unit_of_work() as uow:
            if plan.scope_version == UNGUARDED:
                uow.touch_scope(tenant, req.user_id)
            else:
                uow.guard_scope(tenant, req.user_id, plan.scope_version)
            uow.add_messages(plan.messages)
            if plan.segmentation is not None:
                uow.save_episodes(plan.segmentation.state, plan.segmentation.touched)
            uow.insert_memories(plan.new, actor=actor)
            for old in plan.superseded:
                uow.save_memory(old, ChangeKind.SUPERSEDE, actor=actor)
            for cube, change, _ in plan.changed:
                uow.save_memory(cube, change, actor=actor)
            uow.enqueue(entries)
            uow.log([EventLog(
                tenant=tenant, user_id=req.user_id, kind="write", actor=actor,
                payload={
                    "message_ids": [m.id for m in plan.messages],
                    "written": [{"id": c.id, "type": c.type.value, "skill": c.written_by} for c in plan.new],
                    "superseded": [c.id for c in plan.superseded],
                    **skills_log(plan),
                },
            )])
        return entries


_EXPLICIT = {"insert": OpKind.INSERT, "update": OpKind.UPDATE, "delete": OpKind.DELETE}


def explicit_operations(req: WriteRequest) -> list[ExplicitOperation]:
    """The request's agent operations (Memory-as-Action) as the runtime reads them."""
    return [
        ExplicitOperation(_EXPLICIT[o.op], o.reason, type=MemoryType(o.type) if o.type else None, content=o.content, memory_id=o.memory_id,
                          source_ids=tuple(o.source_ids), importance=o.importance, metadata=dict(o.metadata or {}))
        for o in req.operations or []
    ]


def skills_log(plan: _Plan) -> dict[str, Any]:
    """The write log's record of the skill runtime: which skills each span got, what each skill
    wrote, declined and cost, the changes it made, and the LLM tokens spent."""
    written: dict[str, list[str]] = {}
    for c in plan.new:
        written.setdefault(c.written_by or "", []).append(c.id)
    out: dict[str, Any] = {
        "selected": plan.run.selected,
        "skills": {k: {**v.as_log(), "written": written.get(k, [])} for k, v in plan.run.skills.items()},
    }
    if plan.changed:
        out["changed"] = [{"id": c.id, "change": ch.value, "skill": op.skill, "reason": op.reason} for c, ch, op in plan.changed]
    if plan.declined:
        out["declined"] = plan.declined
    tokens = plan.run.tokens
    if tokens["prompt"] or tokens["completion"]:
        out["tokens"] = tokens
    return out


def _start(cube: MemoryCube) -> datetime:
    return cube.valid_from or cube.event_time or cube.created_at


def _supersede(older: MemoryCube, newer: MemoryCube) -> None:
    """The older value stays, closed at the moment the newer one became true."""
    older.status = MemoryStatus.SUPERSEDED
    older.valid_to = _start(newer)
    older.superseded_by = newer.id
    older.updated_at = utcnow()
