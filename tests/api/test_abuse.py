"""Issue 13 (A13, B16): bounded job queue and per-key rate limits, both 429 with Retry-After."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.auth import create_key
from memsvc.config import Limits
from memsvc.memory_os import MemoryOS
from memsvc.models import JobState
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.api.test_contract import assert_error

pytestmark = pytest.mark.anyio


def limited_os(tmp_path: Path, **limits: float) -> MemoryOS:
    settings = make_settings(tmp_path)
    return build_memory_os(settings.model_copy(update={"limits": Limits(**limits)}))  # type: ignore[arg-type]


@pytest.fixture
def queue_os(tmp_path: Path) -> Iterator[MemoryOS]:
    os_ = limited_os(tmp_path, max_queued_jobs=2)
    yield os_
    os_.close()


def client_for(os_: MemoryOS, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(memory_os=os_)), base_url="http://memsvc",
                             headers={"Authorization": f"Bearer {key}"})


def job_body(i: int) -> dict[str, object]:
    return {"user_id": "alice", "wait": False, "messages": [{"id": f"q{i}", "role": "user", "content": f"Note {i}."}]}


async def test_full_job_queue_is_429_with_retry_after(queue_os: MemoryOS) -> None:
    key = create_key(queue_os.records, "t")[1]
    gate = threading.Event()
    queue_os.jobs.register("hold", lambda job, ctx: {"held": gate.wait(120)})
    queue_os.jobs.submit("t", "hold", {})  # holds the only worker thread, so accepted writes stay queued
    async with client_for(queue_os, key) as c:
        accepted = []
        for i in range(2):
            r = await c.post("/v1/memories", json=job_body(i))
            assert r.status_code == 202, r.text
            accepted.append(r.json()["job_id"])
        writes = [JobState.PENDING, JobState.RUNNING]
        before = queue_os.records.count_jobs(writes, kind="write")
        r = await c.post("/v1/memories", json=job_body(2))
        assert_error(r, 429, "rate_limited")
        assert r.headers["retry-after"] == "1"
        assert queue_os.records.count_jobs(writes, kind="write") == before == 2
        gate.set()
        assert queue_os.jobs.wait_idle(120)  # the queue has drained
        assert [queue_os.job("t", j).state for j in accepted] == [JobState.DONE, JobState.DONE]
        assert (await c.post("/v1/memories", json=job_body(3))).status_code == 202


async def test_rate_per_key_is_429_with_retry_after(tmp_path: Path) -> None:
    os_ = limited_os(tmp_path, rate_per_key=0.01, rate_burst=2)
    try:
        k1, k2 = create_key(os_.records, "t")[1], create_key(os_.records, "t")[1]
        async with client_for(os_, k1) as c1, client_for(os_, k2) as c2:
            assert [(await c1.get("/v1/skills")).status_code for _ in range(2)] == [200, 200]
            r = await c1.get("/v1/skills")
            assert_error(r, 429, "rate_limited")
            assert 1 <= int(r.headers["retry-after"]) <= 100
            assert (await c2.get("/v1/skills")).status_code == 200  # each key has its own bucket
    finally:
        os_.close()


async def test_no_rate_limit_by_default(tmp_path: Path) -> None:
    os_ = limited_os(tmp_path)
    try:
        async with client_for(os_, create_key(os_.records, "t")[1]) as c:
            assert {(await c.get("/v1/skills")).status_code for _ in range(50)} == {200}
    finally:
        os_.close()
