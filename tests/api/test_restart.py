"""Durability: data survives a restart, and an interrupted outbox entry is replayed at start-up."""

from __future__ import annotations

from pathlib import Path

from memsvc.models import MemoryStatus
from memsvc.ports import VectorFilter
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from memsvc.write.pipeline import assign_message_ids
from storage.registry import build_memory_os
from tests.api.conftest import make_settings


def _req(mid: str, text: str) -> WriteRequest:
    return WriteRequest(user_id="alice", messages=[MessageIn(id=mid, role="user", name="Alice", content=text)])


def test_data_survives_restart(tmp_path: Path) -> None:
    os1 = build_memory_os(make_settings(tmp_path))
    os1.add("t", _req("m1", "I moved to Berlin in May 2023."))
    os1.close()
    os2 = build_memory_os(make_settings(tmp_path))
    try:
        res = os2.search("t", SearchRequest(user_id="alice", query="Where does Alice live?"))
        assert {tuple(r["source_ids"]) for r in res.results} == {("m1",)}
        assert len(res.results) == 2
    finally:
        os2.close()


def test_interrupted_outbox_entry_is_applied_by_the_drain_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    os1 = build_memory_os(settings)
    req = assign_message_ids(_req("m1", "My cat is called Miso."))
    # Commit to SQL as a write does, then "crash" before the derived stores are updated.
    plan = os1.writer._plan("t", req, list(req.messages))
    os1.writer._commit("t", req, plan, actor=None)
    flt = VectorFilter(tenant="t", user_id="alice")
    assert os1.vectors.count(flt) == 0
    assert len(os1.records.pending_outbox()) == 2
    os1.close()

    settings = settings.model_copy(update={"outbox": settings.outbox.model_copy(update={"grace_s": 0.0})})
    os2 = build_memory_os(settings, start=False)  # the drain by hand, not by the job runner
    try:
        assert len(os2.records.pending_outbox()) == 2 and os2.vectors.count(flt) == 0
        assert os2.outbox.due()
        assert os2.outbox.drain().applied == 2
        assert os2.records.pending_outbox() == [] and not os2.outbox.due()
        assert os2.vectors.count(flt) == 2
        res = os2.search("t", SearchRequest(user_id="alice", query="What is the cat called?"))
        assert {r["content"] for r in res.results} == {"Alice: My cat is called Miso.", "Alice's cat is called Miso."}
        assert all(r["status"] == MemoryStatus.ACTIVE.value for r in res.results)
    finally:
        os2.close()
