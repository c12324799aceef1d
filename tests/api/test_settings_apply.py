"""Issue 13 (A7, A8): the limits and search settings are the only source of their values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.auth import create_key
from memsvc.config import Settings
from memsvc.memory_os import MemoryOS
from memsvc.schemas import SearchRequest, WriteRequest
from storage.registry import build_memory_os
from tests.api.test_contract import ALICE, assert_error

pytestmark = pytest.mark.anyio


@pytest.fixture
def env_os(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryOS]:
    """A MemoryOS built from the environment, as the app factory and the CLI build it."""
    monkeypatch.setenv("MEMSVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMSVC_LIMITS__MAX_TOP_K", "300")
    monkeypatch.setenv("MEMSVC_LIMITS__MAX_LIST_LIMIT", "700")
    os_ = build_memory_os(Settings())
    yield os_
    os_.close()


async def test_max_top_k_and_list_limit_come_from_the_settings(env_os: MemoryOS) -> None:
    key = create_key(env_os.records, "t")[1]
    app = create_app(memory_os=env_os)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://memsvc",
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        assert (await c.post("/v1/memories", json={"user_id": "alice", "messages": ALICE})).status_code == 200
        r = await c.post("/v1/memories/search", json={"user_id": "alice", "query": "Berlin", "top_k": 250})
        assert r.status_code == 200, r.text
        # all 5 memories are candidates; the 2 facts restate turns that are returned, and packing skips them
        assert sorted(x["type"] for x in r.json()["results"]) == ["episodic"] * 3
        assert_error(await c.post("/v1/memories/search", json={"user_id": "alice", "query": "x", "top_k": 301}),
                     422, "invalid_input")
        r = await c.get("/v1/memories", params={"user_id": "alice", "limit": 650})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 5
        assert_error(await c.get("/v1/memories", params={"limit": 701}), 422, "invalid_input")


def test_search_rrf_k_setting_applies_to_the_presets(tmp_path: Path) -> None:
    scores = {}
    for k in (60, 1000):
        settings = Settings(data_dir=tmp_path / str(k), search={"rrf_k": k})
        os_ = build_memory_os(settings)
        try:
            os_.add("t", WriteRequest(user_id="alice", messages=ALICE, infer=False))
            res = os_.search("t", SearchRequest(user_id="alice", query="Where does Alice live?", preset="dense"))
            scores[k] = max(r["score"] for r in res.results)
        finally:
            os_.close()
    # one retriever at rank 1: score = 1 / (k + 1)
    assert scores == {60: round(1 / 61, 6), 1000: round(1 / 1001, 6)}
