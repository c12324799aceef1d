"""`VectorIndex` on Qdrant's engine in-process (qdrant-edge-py): the default backend.

One shard holds every tenant's points: a dense vector "dense" (cosine, HNSW) and a sparse
vector "bm25" whose IDF the engine computes at query time, plus keyword and float payload
indexes for the filtered fields. Updates go through the shard's write-ahead log.

Edge runs no optimizer by itself: new points sit in an appendable, unindexed segment (searched
exactly, through the payload indexes) until `optimize()` turns it into HNSW segments. After
every ~indexing-threshold of upserts or deletes we run it on a background thread, one run at a
time; `optimize()` can also be called directly, e.g. after a bulk import.

Threads: the binding may be shared between threads (no `unsendable` class; updates, queries
and `optimize()` from different threads work together), but it holds the GIL for the whole of
each call: queries and updates are short, an optimisation is not (seconds per few thousand
384-d points on two cores), and stalls every Python thread meanwhile. Small, frequent runs
and capped segment sizes keep each stall bounded. We serialise updates with one lock (the
service never needs concurrent writes, and the WAL order then equals the call order); reads
and the optimiser go unlocked. `close()` waits for running calls, a running optimisation
included, and later calls raise `BackendUnavailable`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from memsvc.ports import PointState, VectorFilter, VectorPayload, VectorPoint
from storage.vectors import common as c

log = logging.getLogger(__name__)

CONFIG_FILE = "edge_config.json"
UPSERT_BATCH = 512
# HNSW's full-scan threshold (KB of vectors): filters selecting fewer points than this are
# answered from the payload index by exact scoring, which is both exact and fast.
FULL_SCAN_THRESHOLD_KB = 10_000
# Optimise after this many KB of vectors were written since the last run (qdrant's default
# indexing threshold, ~6.6k points at 384 dimensions).
OPTIMIZE_AFTER_KB = 10_000
MIN_OPTIMIZE_AFTER = 1_000
# Segments stop growing at about this many points and up to 8 of them are kept before merging:
# an optimisation then rebuilds at most one such segment, which bounds how long it holds the
# GIL (with qdrant's defaults each run merged into two ever larger segments: 3-4x the time).
MAX_SEGMENT_POINTS = 32_000
SEGMENTS = 8
_STATE_FIELDS = ["tenant", "user_id", "status", c.DIGEST]


class EdgeVectorIndex:
    """Dense + BM25 search over one qdrant-edge shard under `path` (created if absent)."""

    def __init__(self, path: Path, dim: int, hnsw_m: int = 16, hnsw_ef_construct: int = 100) -> None:
        self.path = Path(path)
        self.dim = dim
        config = qe.EdgeConfig(
            vectors={c.DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={c.SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
            ),
            optimizers=qe.EdgeOptimizersConfig(
                default_segment_number=SEGMENTS,
                max_segment_size=max(OPTIMIZE_AFTER_KB, MAX_SEGMENT_POINTS * 4 * dim // 1024),
            ),
            wal_enabled=True,
        )
        self._config = config
        self._recover_compaction()
        if (self.path / CONFIG_FILE).exists():
            self._shard = qe.EdgeShard.load(str(self.path), config)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(self.path), config)
        self._gate = c.Gate(f"vector index {self.path}")
        self._write_lock = threading.Lock()
        self._optimize_lock = threading.Lock()
        self._ensure_payload_indexes()
        self.optimizer = _OptimizeScheduler(
            self._background_optimize, after=max(MIN_OPTIMIZE_AFTER, OPTIMIZE_AFTER_KB * 1024 // (4 * dim))
        )
        if self._shard.info().points_count:
            self.optimizer.request()  # index what an earlier process left unindexed

    # ------------------------------------------------------------------ writes

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        with self._writing():
            for start in range(0, len(points), UPSERT_BATCH):
                batch = [self._point(p) for p in points[start:start + UPSERT_BATCH]]
                self._update(qe.UpdateOperation.upsert_points(batch), len(batch))

    def set_payload(self, items: Sequence[tuple[str, VectorPayload]]) -> None:
        with self._writing():
            for point_id, payload in items:
                # By filter: overwrite by id fails on a missing id after changing the others.
                only = qe.Filter(must=[qe.HasIdCondition({point_id})])
                self._update(qe.UpdateOperation.overwrite_payload_by_filter(only, c.encode_payload(payload)))

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._writing():
            self._update(qe.UpdateOperation.delete_points(list(ids)), len(ids))

    def delete_scope(self, tenant: str, user_id: str) -> None:
        with self._writing():
            flt = _filter(c.scope_condition(tenant, user_id))
            removed = self._shard.count(qe.CountRequest(exact=True, filter=flt))
            self._update(qe.UpdateOperation.delete_points_by_filter(flt), removed)

    # ------------------------------------------------------------------ reads

    def search(self, vector: Sequence[float], flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        if limit <= 0 or c.matches_nothing(flt):
            return []
        query = qe.Query.Nearest(c.dense(vector, self.dim), using=c.DENSE)
        request = qe.QueryRequest(
            limit=limit, query=query, filter=_filter(c.build_condition(flt)),
            with_payload=False, with_vector=False,
        )
        with self._gate.enter():
            hits = self._shard.query(request)
        return c.ranked([(str(h.id), float(h.score)) for h in hits])

    def search_text(self, text: str, flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        indices, values = c.embed_query(text)
        if not indices or limit <= 0 or c.matches_nothing(flt):
            return []
        # IDF over the scope's own points: another tenant's texts never shift the ranking.
        idf = qe.IdfParams(corpus=_filter(c.scope_condition(flt.tenant, flt.user_id)))
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(qe.SparseVector(indices, values), using=c.SPARSE),
            filter=_filter(c.build_condition(flt)),
            params=qe.SearchParams(idf=idf),
            with_payload=False, with_vector=False,
        )
        with self._gate.enter():
            hits = self._shard.query(request)
        return c.ranked([(str(h.id), float(h.score)) for h in hits if h.score > 0])

    def count(self, flt: VectorFilter) -> int:
        if c.matches_nothing(flt):
            return 0
        with self._gate.enter():
            return int(self._shard.count(qe.CountRequest(exact=True, filter=_filter(c.build_condition(flt)))))

    def scan(self, flt: VectorFilter, limit: int, cursor: str | None = None) -> tuple[list[PointState], str | None]:
        if c.matches_nothing(flt):
            return [], None
        request = qe.ScrollRequest(
            offset=cursor, limit=limit, filter=_filter(c.build_condition(flt)),
            with_payload=_STATE_FIELDS, with_vector=False,
        )
        with self._gate.enter():
            records, after = self._shard.scroll(request)
        return [c.point_state(r.id, r.payload) for r in records], (str(after) if after is not None else None)

    def states(self, ids: Sequence[str]) -> dict[str, PointState]:
        if not ids:
            return {}
        with self._gate.enter():
            records = self._shard.retrieve(list(dict.fromkeys(ids)), _STATE_FIELDS, False)
        return {str(r.id): c.point_state(r.id, r.payload) for r in records}

    def vectors(self, ids: Sequence[str]) -> dict[str, tuple[str | None, np.ndarray]]:
        out: dict[str, tuple[str | None, np.ndarray]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), c.FETCH_BATCH):
            with self._gate.enter():
                records = self._shard.retrieve(list(unique[start:start + c.FETCH_BATCH]), [c.DIGEST], [c.DENSE])
            out.update(c.stored_vector(r.id, r.payload, r.vector) for r in records)
        return out

    # ------------------------------------------------------------------ maintenance

    def optimize(self) -> bool:
        """Build HNSW and merge segments now (blocking); True when anything changed."""
        with self._gate.enter():
            return self._run_optimize()

    def flush(self) -> None:
        with self._writing():
            self._shard.flush()

    def close(self) -> None:
        self.optimizer.close()  # drops a pending run, waits for a running one
        if not self._gate.close():  # waits for running calls
            return
        with self._write_lock:
            self._shard.flush()
            self._shard.close()

    def compact(self) -> None:
        """Rewrite the shard with only its live points, so deleted ones (a purge) leave nothing on
        disk: the engine keeps a deleted point's payload and vectors in its segments, payload
        indexes and WAL until a compaction it does not run at small sizes. Writes wait for the copy
        (the write lock), reads go on until the swap, which holds them for well under a second."""
        fresh = self.path.with_name(self.path.name + ".compact")
        old = self.path.with_name(self.path.name + ".old")
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        with self._write_lock:
            with self._gate.enter():
                shard = qe.EdgeShard.create(str(fresh), self._config)
                offset = None
                while True:
                    page, offset = self._shard.scroll(qe.ScrollRequest(
                        offset=offset, limit=1000, with_payload=True, with_vector=True))
                    if page:
                        shard.update(qe.UpdateOperation.upsert_points(
                            [qe.Point(r.id, r.vector, r.payload) for r in page]))
                    if offset is None:
                        break
                for name, schema in _payload_indexes().items():
                    shard.update(qe.UpdateOperation.create_field_index(name, schema))
                shard.optimize()
                shard.flush()
                shard.close()
            with self._gate.exclusive(), self._optimize_lock:
                self._shard.close()
                self.path.rename(old)
                fresh.rename(self.path)
                self._shard = qe.EdgeShard.load(str(self.path), self._config)
        shutil.rmtree(old, ignore_errors=True)

    def _recover_compaction(self) -> None:
        """A compaction that crashed before its swap leaves the old shard whole (the copy is dropped);
        one that crashed inside the swap left the old shard at `.old`: it comes back."""
        old = self.path.with_name(self.path.name + ".old")
        if not (self.path / CONFIG_FILE).exists() and (old / CONFIG_FILE).exists():
            shutil.rmtree(self.path, ignore_errors=True)
            old.rename(self.path)
        shutil.rmtree(self.path.with_name(self.path.name + ".compact"), ignore_errors=True)

    def info(self) -> qe.ShardInfo:
        with self._gate.enter():
            return self._shard.info()

    # ------------------------------------------------------------------ internals

    def _point(self, p: VectorPoint) -> qe.Point:
        vectors: dict[str, qe.NamedVector] = {c.DENSE: c.dense(p.vector, self.dim)}
        indices, values = c.embed_document(p.text)
        if indices:  # a point without tokens stays out of the BM25 corpus
            vectors[c.SPARSE] = qe.SparseVector(indices, values)
        return qe.Point(p.id, vectors, c.encode_payload(p.payload))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Writers take the write lock before the gate: a writer waiting for the lock then holds no
        gate slot, so a compaction holding the lock can still get the gate to itself for its swap."""
        with self._write_lock, self._gate.enter():
            yield

    def _update(self, operation: qe.UpdateOperation, changed: int = 0) -> None:
        self._shard.update(operation)  # under `_writing`
        self.optimizer.note_writes(changed)

    def _run_optimize(self) -> bool:
        # The engine lets reads and writes run beside it (segments are swapped in atomically),
        # though the binding's hold on the GIL keeps Python callers waiting meanwhile.
        with self._optimize_lock:
            self.optimizer.reset()
            return bool(self._shard.optimize())

    def _background_optimize(self) -> None:
        try:
            with self._gate.enter():
                self._run_optimize()
        except Exception:  # a failed run is retried after the next writes
            if not self._gate.closed:
                log.exception("optimising the vector shard at %s failed", self.path)

    def _ensure_payload_indexes(self) -> None:
        existing = set(self._shard.info().payload_schema)
        for name, schema in _payload_indexes().items():
            if name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, schema))


class _OptimizeScheduler:
    """Runs `run` on a background thread whenever `after` points changed since the last run.

    Small, frequent runs are what keep the GIL stalls short (see the module docstring): the
    optimiser indexes the new segment and merges it into the existing graphs incrementally,
    so one run costs about the same at 10k points as at 100k.
    """

    def __init__(self, run: Callable[[], object], after: int) -> None:
        self.after = after
        self._run = run
        self._cond = threading.Condition()
        self._pending = 0  # points written or deleted since the last run started
        self._due = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def note_writes(self, changed: int) -> None:
        with self._cond:
            self._pending += changed
            if self._pending >= self.after:
                self._wake()

    def request(self) -> None:
        """Run soon, however few points changed."""
        with self._cond:
            self._wake()

    def reset(self) -> None:
        with self._cond:
            self._pending = 0
            self._due = False

    def close(self) -> None:
        """Drop a pending run and wait for a running one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wake(self) -> None:
        # Called with the condition held.
        if self._closed:
            return
        self._due = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edge-optimize", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._due or self._closed):
                    self._cond.wait()
                if self._closed:
                    return
            self._run()  # resets the schedule first; writes during the run count towards the next


def _payload_indexes() -> dict[str, qe.KeywordIndexParams | qe.FloatIndexParams]:
    # Extra HNSW links per value only where a search is usually confined to one value
    # (tenant, user); the other fields are selective through the planner's index lookups.
    return {
        "tenant": qe.KeywordIndexParams(is_tenant=True),
        "user_id": qe.KeywordIndexParams(),
        "type": qe.KeywordIndexParams(enable_hnsw=False),
        "status": qe.KeywordIndexParams(enable_hnsw=False),
        "agent_id": qe.KeywordIndexParams(enable_hnsw=False),
        "session_id": qe.KeywordIndexParams(enable_hnsw=False),
        **{name: qe.FloatIndexParams(enable_hnsw=False) for name in c.TIME_FIELDS},
    }


def _filter(cond: c.AllOf) -> qe.Filter:
    return qe.Filter(must=[_condition(x) for x in cond.conditions])


def _condition(cond: c.Cond) -> qe.FieldCondition | qe.IsEmptyCondition | qe.HasIdCondition | qe.Filter:
    match cond:
        case c.Match(key, value):
            return qe.FieldCondition(key, match=qe.MatchValue(value))
        case c.MatchAny(key, values):
            return qe.FieldCondition(key, match=qe.MatchAny(list(values)))
        case c.Range(key, gte, gt, lte, lt):
            return qe.FieldCondition(key, range=qe.RangeFloat(gte=gte, gt=gt, lte=lte, lt=lt))
        case c.IsEmpty(key):
            return qe.IsEmptyCondition(key)
        case c.HasId(ids):
            return qe.HasIdCondition(set(ids))
        case c.AnyOf(conditions):
            return qe.Filter(should=[_condition(x) for x in conditions])
        case c.AllOf(conditions):
            return qe.Filter(must=[_condition(x) for x in conditions])
    raise TypeError(f"unknown condition {cond!r}")
