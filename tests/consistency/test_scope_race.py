"""Issue 13: dedup and supersession resolve against SQL, and concurrent writers of one user
(threads of one process, or processes sharing the database) leave exactly one active value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memsvc.memory_os import MemoryOS
from memsvc.models import SLOT_KEY, MemoryStatus, MemoryType
from memsvc.ports import MemoryQuery
from memsvc.schemas import MessageIn, WriteRequest
from memsvc.write.pipeline import assign_message_ids
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.conftest import reset_postgres

REPO = Path(__file__).resolve().parents[2]


def fact(mid: str, text: str, year: int, user: str = "alice") -> WriteRequest:
    return WriteRequest(user_id=user, messages=[
        MessageIn(id=mid, role="user", name="Alice", content=text, timestamp=datetime(year, 1, 1, tzinfo=UTC))])


def facts(os_: MemoryOS, user: str = "alice", status: MemoryStatus | None = MemoryStatus.ACTIVE) -> list[str]:
    page = os_.records.list_memories("t", MemoryQuery(
        user_id=user, types=[MemoryType.SEMANTIC], statuses=[status] if status else None, limit=500))
    return sorted(c.content for c in page.items)


@pytest.fixture
def memory_os(tmp_path: Path) -> MemoryOS:
    os_ = build_memory_os(make_settings(tmp_path))
    yield os_  # type: ignore[misc]
    os_.close()


def commit_unindexed(os_: MemoryOS, req: WriteRequest) -> None:
    """A write committed to SQL whose outbox entries the index has not seen yet (the window in
    which the next write used to resolve against the stale index)."""
    req = assign_message_ids(req)
    plan = os_.writer._plan("t", req, list(req.messages))
    os_.writer._commit("t", req, plan, actor=None)


def test_a_fact_the_index_has_not_seen_yet_is_superseded(memory_os: MemoryOS) -> None:
    commit_unindexed(memory_os, fact("m1", "I live in Paris.", 2023))
    memory_os.add("t", fact("m2", "I live in Berlin.", 2024))
    assert facts(memory_os) == ["Alice lives in Berlin."]
    assert facts(memory_os, status=MemoryStatus.SUPERSEDED) == ["Alice lives in Paris."]


def test_a_repeat_of_a_fact_the_index_has_not_seen_yet_is_dropped(memory_os: MemoryOS) -> None:
    commit_unindexed(memory_os, fact("m1", "I live in Paris.", 2023))
    memory_os.add("t", fact("m2", "I live in Paris.", 2023))
    assert facts(memory_os, status=None) == ["Alice lives in Paris."]


def test_threads_writing_one_user_leave_one_active_value(memory_os: MemoryOS) -> None:
    users = [f"u{i}" for i in range(4)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(text: str, year: int) -> None:
        try:
            for u in users:
                barrier.wait(timeout=60)
                memory_os.add("t", fact(f"{u}-{year}", text, year, user=u))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=a) for a in (("I live in Paris.", 2023), ("I live in Berlin.", 2024))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for u in users:
        assert facts(memory_os, u) == ["Alice lives in Berlin."], u
        assert facts(memory_os, u, MemoryStatus.SUPERSEDED) == ["Alice lives in Paris."], u


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def test_two_processes_writing_one_user_leave_one_active_value(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rounds = 6
    if backend == "sqlite":
        base = make_settings(tmp_path / "shared")
    else:
        base = make_settings(tmp_path / "shared", records="postgresql",
                             pg_url=reset_postgres(request.getfixturevalue("postgres_url")))
    build_memory_os(base, start=False).close()  # migrate once
    procs = []
    start_at = time.time() + 25  # both load their models first
    for prefix in ("a", "b"):
        # Each process has its own vector index (an embedded shard is one process's): resolution
        # must come from the database they share, as it would with one Qdrant server.
        own = base.model_copy(update={"vectors": base.vectors.model_copy(update={"path": tmp_path / f"vectors-{prefix}"})})
        cmd = [sys.executable, "-m", "tests.consistency.writer_proc", own.model_dump_json(), prefix, str(start_at), str(rounds)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "ok", err[-3000:]
    check = build_memory_os(base, start=False)
    try:
        active = check.records.list_memories("t", MemoryQuery(user_id="alice", statuses=[MemoryStatus.ACTIVE], limit=500))
        slots = [c.metadata.get(SLOT_KEY) for c in active.items if c.type is MemoryType.SEMANTIC]
        assert slots == ["alice/employer"], [c.content for c in active.items]  # slots are keyed by subject
        assert facts(check) == [f"Alice works at Bcorp{rounds - 1}."]  # the latest, by event time
        assert len(facts(check, status=MemoryStatus.SUPERSEDED)) == 2 * rounds - 1
        episodic = check.records.list_memories("t", MemoryQuery(user_id="alice", types=[MemoryType.EPISODIC], limit=500))
        sources = sorted(s for c in episodic.items for s in c.source_ids)
        assert sources == sorted([f"{p}{i}" for p in ("a", "b") for i in range(rounds)] +
                                 [f"shared{i}" for i in range(rounds)])  # each shared message once
    finally:
        check.close()
    json.dumps(None)
