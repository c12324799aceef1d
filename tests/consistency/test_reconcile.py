"""Issue 13: reconciliation finds drift between SQL, the vector index and the graph, repairs it,
and reports the counts; a second run finds nothing."""

from __future__ import annotations

from pathlib import Path

from memsvc.indexer import payload_of
from memsvc.models import Entity, MemoryStatus, Mention, new_id
from memsvc.ports import MemoryQuery, VectorFilter, VectorPoint
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
