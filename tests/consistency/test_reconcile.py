"""Issue 13: reconciliation finds drift between SQL, the vector index and the graph, repairs it,
and reports the counts; a second run finds nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from memsvc.indexer import payload_of
from memsvc.models import Entity, MemoryStatus, Mention, new_id
from memsvc.ports import MemoryQuery, VectorFilter, VectorPoint, text_digest
from memsvc.schemas import SearchRequest
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.consistency.test_outbox import turn


def test_reconciliation_repairs_missing_orphan_and_stale_points_and_orphan_graph_memories(tmp_path: Path) -> None:
    os_ = build_memory_os(make_settings(tmp_path), start=False)
    try:
        os_.add("t", turn("m1", "My cat is called Miso."))
        os_.add("t", turn("m2", "I play the cello on Sundays."))
        (miso,) = os_.search("t", SearchRequest(user_id="alice", query="cat", top_k=1)).results
        cello = next(c for c in os_.records.list_memories("t", MemoryQuery(user_id="alice")).items if c.id != miso["id"])
        # Drift, as a restored backup or a lost update would leave it:
        os_.vectors.delete([miso["id"]])  # a missing point
        ghost = cello.model_copy(update={"id": new_id()})
        os_.vectors.upsert([VectorPoint(ghost.id, [1.0] + [0.0] * 383, "ghost", payload_of(ghost))])  # an orphan
        os_.vectors.set_payload([(cello.id, payload_of(cello.model_copy(update={"status": MemoryStatus.ARCHIVED})))])
        assert os_.graph is not None
        os_.graph.upsert("t", "alice", [Entity(id="e-ghost", tenant="t", user_id="alice", name="Ghost")], [],
                         [Mention(tenant="t", user_id="alice", memory_id=ghost.id, entity_id="e-ghost")])

        first = os_.reconciler.reconcile().as_dict()
        assert {k: first[k] for k in ("missing_points", "orphan_points", "stale_points", "orphan_graph_memories",
                                      "repaired", "tenants", "memories_scanned")} == {
            "missing_points": 1, "orphan_points": 1, "stale_points": 1, "orphan_graph_memories": 1,
            "repaired": 4, "tenants": 1, "memories_scanned": 2}
        flt = VectorFilter(tenant="t", user_id="alice", statuses=[MemoryStatus.ACTIVE])
        assert sorted(p.id for p in os_.vectors.scan(flt, 10)[0]) == sorted([miso["id"], cello.id])
        assert ghost.id not in os_.graph.snapshot("t", "alice").memory_ids
        assert "e-ghost" not in os_.graph.catalog("t", "alice").entity_ids
        second = os_.reconciler.reconcile()
        assert (second.repaired, second.points_scanned, second.memories_scanned) == (0, 2, 2)
    finally:
        os_.close()


def test_a_full_pass_gives_points_stored_without_a_digest_their_text_digest(tmp_path: Path) -> None:
    """Points written before payloads carried the digest of their text (an upgraded deployment) get it
    from a full pass, so that retention sweeps read their vectors back instead of embedding them; it is
    not drift (nothing is repaired) and a second pass finds nothing to do."""
    os_ = build_memory_os(make_settings(tmp_path), start=False)
    try:
        os_.add("t", turn("m1", "My cat is called Miso."))
        os_.add("t", turn("m2", "I play the cello on Sundays."))
        cubes = os_.records.list_memories("t", MemoryQuery(user_id="alice")).items
        os_.vectors.set_payload([(c.id, replace(payload_of(c), digest=None)) for c in cubes])  # as stored before
        assert {d for d, _ in os_.vectors.vectors([c.id for c in cubes]).values()} == {None}

        first = os_.reconciler.reconcile(full=True)
        assert (first.digests_backfilled, first.repaired) == (len(cubes), 0)
        stored = os_.vectors.vectors([c.id for c in cubes])
        assert {i: d for i, (d, _) in stored.items()} == {c.id: text_digest(c.content) for c in cubes}
        flt = VectorFilter(tenant="t", user_id="alice", statuses=[MemoryStatus.ACTIVE])
        assert sorted(p.id for p in os_.vectors.scan(flt, 10)[0]) == sorted(c.id for c in cubes)  # payload intact
        second = os_.reconciler.reconcile(full=True)
        assert (second.digests_backfilled, second.repaired) == (0, 0)
    finally:
        os_.close()


def test_between_full_passes_a_run_reads_only_what_changed(tmp_path: Path) -> None:
    """After the first (full) pass, a run reads the memories changed since the last pass and repairs
    their points (a point a change left missing, or one a lost delete left behind); drift that no
    change marks waits for the next full pass, which comes when due or when asked."""
    from datetime import UTC, datetime, timedelta

    from memsvc.reconcile import CHANGED_MARK, FULL_MARK, Reconciler

    os_ = build_memory_os(make_settings(tmp_path), start=False)
    try:
        old = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        kept = new_id()
        os_.import_records("t", [{"kind": "memory", "id": kept, "user_id": "alice", "type": "semantic",
                                  "content": "Alice keeps bees.", "source_ids": [], "created_at": old, "updated_at": old,
                                  "importance": 0.5, "version": 1, "status": "active", "metadata": {}, "access_count": 0}])
        first = os_.reconciler.reconcile()
        assert (first.full_passes, first.repaired, first.memories_scanned) == (1, 0, 1)
        assert os_.records.job_mark(FULL_MARK, "t") is not None and os_.records.job_mark(CHANGED_MARK, "t") is not None

        os_.vectors.delete([kept])  # drift on an old, unchanged memory
        os_.add("t", turn("m1", "I play the cello on Sundays."))
        (cello,) = [c.id for c in os_.records.list_memories("t", MemoryQuery(user_id="alice")).items if c.id != kept]
        os_.vectors.delete([cello])  # a point missing after a change
        second = os_.reconciler.reconcile()
        assert (second.full_passes, second.memories_scanned, second.missing_points, second.repaired) == (0, 1, 1, 1)
        assert set(os_.vectors.states([kept, cello])) == {cello}

        point = VectorPoint(cello, [1.0] + [0.0] * 383, "cello", payload_of(os_.get("t", cello)))
        os_.delete("t", cello)
        os_.vectors.upsert([point])  # a delete whose point stayed behind
        third = os_.reconciler.reconcile()
        assert (third.full_passes, third.orphan_points, third.repaired) == (0, 1, 1)
        assert os_.vectors.states([cello]) == {}

        forced = os_.reconciler.reconcile(full=True)  # asked for: the old memory's point comes back
        assert (forced.full_passes, forced.missing_points) == (1, 1) and set(os_.vectors.states([kept])) == {kept}

        os_.vectors.delete([kept])
        due = Reconciler(os_.records, os_.vectors, os_.indexer, os_.graph, full_interval_s=1e-6).reconcile()
        assert (due.full_passes, due.missing_points) == (1, 1)  # the last full pass is older than the interval
    finally:
        os_.close()
