"""Issue 13 (C18, C19): a purge leaves no job body behind and no purged bytes in the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsvc.config import SqliteRecords
from memsvc.memory_os import MemoryOS
from memsvc.models import JobState
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
    memory_os.vectors.flush()
    assert holding_the_marker() == []  # every file: SQLite database, WAL, Qdrant shard
