"""Issue 13: the outbox retries with backoff, keeps order per memory, ends in visible dead letters,
and purges never report success early nor delete what was written after them."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from memsvc.config import Settings
from memsvc.errors import PurgeIncomplete
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryType, OutboxOp, utcnow
from memsvc.ports import MemoryQuery, VectorFilter
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.consistency.test_scope_race import commit_unindexed

ALICE = VectorFilter(tenant="t", user_id="alice")


def settings_for(tmp_path: Path, **outbox: float) -> Settings:
    base = make_settings(tmp_path)
    return base.model_copy(update={"outbox": base.outbox.model_copy(update=outbox)})


def turn(mid: str, text: str, user: str = "alice", infer: bool = False) -> WriteRequest:
    return WriteRequest(user_id=user, infer=infer, messages=[MessageIn(id=mid, role="user", name="Alice", content=text)])


def memory_ids(os_: MemoryOS, user: str = "alice") -> list[str]:
    return sorted(c.id for c in os_.records.list_memories("t", MemoryQuery(user_id=user, limit=500)).items)


def readyz_and_metrics(os_: MemoryOS) -> tuple[dict[str, object], str]:
    async def go() -> tuple[dict[str, object], str]:
        app = create_app(memory_os=os_)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
            ready = await c.get("/readyz")
            assert ready.status_code == 200
            return ready.json(), (await c.get("/metrics")).text
    import anyio

    return anyio.run(go)


def test_a_write_whose_index_fails_is_acknowledged_retried_and_ends_as_a_visible_dead_letter(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_attempts=3, backoff_s=0.05, grace_s=0.0)
    os1 = build_memory_os(settings, start=False)  # no background drain: this test drains by hand
    os1.vectors.close()  # the index fails from now on
    result = os1.add("t", turn("m1", "My cat is called Miso."))
    assert len(result.written) == 1  # committed, so acknowledged
    (entry,) = [e for e in os1.records.pending_outbox() if e.op is OutboxOp.UPSERT_VECTORS]
    assert entry.attempts == 1 and entry.next_at is not None and entry.next_at > entry.created_at
    first = os1.outbox.drain()  # the vector entry waits for its retry, the graph entry of m1 behind it
    assert (first.applied, first.waiting) == (0, 2)
    time.sleep(0.06)
    second = os1.outbox.drain()
    assert (second.failed, second.dead) == (1, 0)
    time.sleep(0.11)  # the backoff doubled
    third = os1.outbox.drain()
    assert (third.failed, third.dead) == (1, 1)
    assert os1.outbox.drain().applied == 1  # a dead letter holds nothing back: the graph entry goes
    assert os1.records.pending_outbox() == []
    (dead,) = os1.records.dead_outbox()
    assert dead.id == entry.id and dead.attempts == 3 and "closed" in (dead.last_error or "")
    os1.close()

    os2 = build_memory_os(settings, start=False)  # the index works again; the dead letter stays dead
    try:
        assert os2.outbox.drain().applied == 0 and os2.vectors.count(ALICE) == 0
        ready, metrics = readyz_and_metrics(os2)
        assert ready["status"] == "degraded" and ready["outbox"] == {  # type: ignore[comparison-overlap]
            "pending": 0, "retrying": 0, "dead": 1, "oldest_age_s": 0.0}
        assert "memsvc_outbox_dead 1.0" in metrics and "memsvc_outbox_pending 0.0" in metrics
        assert os2.outbox.revive() == 1
        assert os2.outbox.drain().applied == 1
        assert os2.vectors.count(ALICE) == 1
        hits = os2.search("t", SearchRequest(user_id="alice", query="What is the cat called?"))
        assert [r["source_ids"] for r in hits.results] == [["m1"]]
        ready, metrics = readyz_and_metrics(os2)
        assert ready["status"] == "ready" and "memsvc_outbox_dead 0.0" in metrics
    finally:
        os2.close()


def test_the_drain_keeps_order_per_memory_and_goes_on_with_other_memories(tmp_path: Path) -> None:
    os_ = build_memory_os(settings_for(tmp_path, grace_s=0.0), start=False)
    try:
        commit_unindexed(os_, turn("m1", "Alice adopted a dog named Rex.", infer=True))
        first = os_.records.pending_outbox()
        upsert_x = next(e for e in first if e.op is OutboxOp.UPSERT_VECTORS)
        assert upsert_x.id is not None
        os_.records.fail_outbox(upsert_x.id, "index down", retry_at=utcnow() + timedelta(hours=1))
        commit_unindexed(os_, turn("m2", "Bob sails on Lake Geneva.", user="bob", infer=True))
        result = os_.outbox.drain()
        # m1's vector entry waits for its retry, and m1's graph entry waits behind it; bob's go on.
        assert (result.applied, result.waiting, result.failed) == (2, 2, 0)
        assert os_.vectors.count(ALICE) == 0
        assert os_.vectors.count(VectorFilter(tenant="t", user_id="bob")) == len(memory_ids(os_, "bob"))
        assert os_.graph is not None and os_.graph.snapshot("t", "alice").memory_ids == []
        assert os_.graph.snapshot("t", "bob").memory_ids != []
        assert [e.op for e in os_.records.pending_outbox()] == [OutboxOp.UPSERT_VECTORS, OutboxOp.INDEX_GRAPH]
    finally:
        os_.close()


def test_a_purge_whose_index_fails_answers_503_and_is_finished_by_the_drain(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, grace_s=0.0, backoff_s=0.01)
    os1 = build_memory_os(settings, start=False)
    os1.add("t", turn("m1", "I moved to Berlin in May 2023.", infer=True))
    os1.add("t", turn("b1", "I live in Oslo.", user="bob", infer=True))
    assert os1.vectors.count(ALICE) > 0
    os1.vectors.close()
    with pytest.raises(PurgeIncomplete) as failed:
        os1.purge_user("t", "alice")
    assert failed.value.status == 503 and failed.value.details["deleted"]["memories"] > 0
    assert memory_ids(os1) == []  # the records are gone; the index still has the points
    os1.close()

    os2 = build_memory_os(settings, start=False)
    try:
        assert os2.vectors.count(ALICE) > 0
        time.sleep(0.02)
        assert os2.outbox.drain().applied == 1
        assert os2.vectors.count(ALICE) == 0
        assert os2.vectors.count(VectorFilter(tenant="t", user_id="bob")) == len(memory_ids(os2, "bob")) > 0
        assert os2.records.pending_outbox() == [] and os2.records.dead_outbox() == []
        assert os2.purge_user("t", "alice")["memories"] == 0  # repeating it confirms
    finally:
        os2.close()


def test_a_stale_purge_replayed_after_a_restart_keeps_what_was_written_after_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, grace_s=0.0, backoff_s=0.01, interval_s=0.2)
    settings = settings.model_copy(update={"jobs": settings.jobs.model_copy(update={"sweep_interval_s": 0.2})})
    os1 = build_memory_os(settings, start=False)
    os1.add("t", turn("m1", "I moved to Berlin in May 2023.", infer=True))
    os1.vectors.close()
    with pytest.raises(PurgeIncomplete):
        os1.purge_user("t", "alice")
    os1.close()

    os2 = build_memory_os(settings, start=False)
    try:
        os2.add("t", turn("m2", "My new cat is called Tofu.", infer=True))  # after the purge
        newer = memory_ids(os2)
        assert len(newer) == 2
        os2.start()  # the background drain replays the purge entry now
        deadline = time.monotonic() + 30
        while os2.records.pending_outbox() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os2.records.pending_outbox() == [] and os2.records.dead_outbox() == []
        assert sorted(p.id for p in os2.vectors.scan(ALICE, 100)[0]) == newer
        hits = os2.search("t", SearchRequest(user_id="alice", query="What is the new cat called?"))
        assert {tuple(r["source_ids"]) for r in hits.results} == {("m2",)}
        assert [c.type for c in os2.records.list_memories("t", MemoryQuery(user_id="alice")).items].count(
            MemoryType.EPISODIC) == 1
        assert os2.graph is not None and set(os2.graph.snapshot("t", "alice").memory_ids) <= set(newer)
    finally:
        os2.close()
