"""Issue 13 (C18, C19): a purge leaves no job body behind and no purged bytes in the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsvc.config import SqliteRecords
from memsvc.memory_os import MemoryOS
from memsvc.models import JobState
from memsvc.schemas import SearchRequest
from tests.api.conftest import ClientFactory
from tests.api.test_contract import assert_error

pytestmark = pytest.mark.anyio

MARKER = "zqxmarker7781"


def drain(os_: MemoryOS) -> None:
    assert os_.jobs.wait_idle(300)  # every queued job has run


async def test_purge_removes_the_users_jobs(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    jobs = {}
    for user in ("alice", "bob"):
        r = await a.post("/v1/memories", json={"user_id": user, "wait": False, "messages": [
            {"id": f"{user}-1", "role": "user", "content": f"My secret is {MARKER} for {user}."}]})
        assert r.status_code == 202, r.text
        jobs[user] = r.json()["job_id"]
    drain(memory_os)
    assert memory_os.job("tenant-a", jobs["alice"]).state is JobState.DONE
    r = await a.delete("/v1/users/alice")
    assert r.status_code == 200 and r.json()["deleted"]["jobs"] == 1
    assert_error(await a.get(f"/v1/jobs/{jobs['alice']}"), 404, "not_found")
    assert (await a.get(f"/v1/jobs/{jobs['bob']}")).status_code == 200  # another user's job stays


async def test_purge_leaves_no_marker_in_the_data_dir(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    if not isinstance(memory_os.settings.records, SqliteRecords):
        pytest.skip("the bytes of an embedded data directory only")
    a = client(keys["a"])
    for wait in (True, False):
        r = await a.post("/v1/memories", json={"user_id": "alice", "wait": wait, "messages": [
            {"id": f"w{wait}", "role": "user", "content": f"I moved to Berlin; my code word is {MARKER}{wait}."}]})
        assert r.status_code in (200, 202), r.text
    drain(memory_os)
    memory_os.vectors.flush()

    def holding_the_marker() -> list[str]:
        root = memory_os.settings.data_dir
        return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                      if p.is_file() and MARKER.encode() in p.read_bytes())

    assert holding_the_marker() != []  # the probe sees it (in the SQLite WAL) before the purge
    assert (await a.delete("/v1/users/alice")).status_code == 200
    # the purge's compaction of the vector shard runs in the background: scan once it has finished
    assert memory_os.jobs.wait_idle(120, kind="vectors.compact")
    memory_os.vectors.flush()
    assert holding_the_marker() == []  # every file: SQLite database, WAL, Qdrant shard


def _write_marked(os_: MemoryOS, marker: str) -> None:
    from memsvc.schemas import MessageIn, WriteRequest

    os_.add("t", WriteRequest(
        user_id=f"alice{marker}", session_id=f"s{marker}", metadata={"k": f"v{marker}"},
        messages=[MessageIn(id=f"m{marker}", role="user", name=f"Zed{marker}",
                            content=f"I moved to Berlin{marker}; my code word is {marker}.")]))
    os_.add("t", WriteRequest(user_id="bob", messages=[MessageIn(role="user", content="I like green tea.")]))


def _holding(root: Path, marker: str, under: str = "") -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / under).rglob("*")
                  if p.is_file() and marker.encode() in p.read_bytes())


def test_purge_leaves_no_marker_in_the_record_files_after_a_stop_and_a_restart(tmp_path: Path) -> None:
    """Markers in the user id, session id, metadata, speaker and content; the SQLite files are
    scanned right after the purge, after a clean stop and after a restart."""
    from storage.registry import build_memory_os
    from tests.api.conftest import make_settings

    os1 = build_memory_os(make_settings(tmp_path), start=False)
    _write_marked(os1, MARKER)
    assert "memsvc.db-wal" in _holding(tmp_path, MARKER)
    os1.purge_user("t", f"alice{MARKER}")
    db = [p for p in _holding(tmp_path, MARKER) if p.startswith("memsvc.db")]
    os1.close()
    stopped = [p for p in _holding(tmp_path, MARKER) if p.startswith("memsvc.db")]
    os2 = build_memory_os(make_settings(tmp_path), start=False)
    restarted = [p for p in _holding(tmp_path, MARKER) if p.startswith("memsvc.db")]
    os2.close()
    assert (db, stopped, restarted) == ([], [], [])


def test_purge_leaves_no_marker_in_the_vector_shard_after_a_stop_and_a_restart(tmp_path: Path) -> None:
    """The engine keeps deleted points in its segments, payload indexes and WAL; the purge's
    background compaction rewrites the shard without them."""
    from storage.registry import build_memory_os
    from tests.api.conftest import make_settings

    os1 = build_memory_os(make_settings(tmp_path))
    _write_marked(os1, MARKER)
    assert _holding(tmp_path, MARKER, "vectors") != []  # the marker is there before
    bob = os1.search("t", SearchRequest(user_id="bob", query="green tea")).results
    assert bob
    os1.purge_user("t", f"alice{MARKER}")
    assert os1.jobs.wait_idle(120, kind="vectors.compact")
    after = _holding(tmp_path, MARKER, "vectors")
    # the other user's memories survive the rewrite, and search still finds them
    assert [r["id"] for r in os1.search("t", SearchRequest(user_id="bob", query="green tea")).results] == \
        [r["id"] for r in bob]
    os1.close()
    stopped = _holding(tmp_path, MARKER, "vectors")
    os2 = build_memory_os(make_settings(tmp_path), start=False)
    restarted = _holding(tmp_path, MARKER, "vectors")
    assert [r["id"] for r in os2.search("t", SearchRequest(user_id="bob", query="green tea")).results] == \
        [r["id"] for r in bob]
    os2.close()
    assert (after, stopped, restarted) == ([], [], [])
