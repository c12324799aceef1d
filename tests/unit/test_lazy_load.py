"""A search in fused order reads from SQL only as far as packing goes, and returns exactly what
loading the whole candidate pool would (issue 15: candidate loading was the read path's largest
stage after the query embedding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryCube
from memsvc.read import restated
from memsvc.retrieval.packing import edge_order, pack
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from storage.registry import build_memory_os
from tests.api.conftest import make_settings

TOPICS = ["hiking in the Alps", "my sister's bakery", "the chess club", "learning Portuguese", "our cat Miso",
          "the road bike", "a trip to Osaka", "night shifts at the hospital"]


@pytest.fixture(scope="module")
def os_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryOS]:
    m = build_memory_os(make_settings(tmp_path_factory.mktemp("lazy")), start=False)
    msgs = [MessageIn(id=f"m{i}", role="user", name="Sam", timestamp=f"2024-0{1 + i % 9}-1{i % 10}T10:00:00Z",
                      content=f"Note {i}: I keep thinking about {TOPICS[i % len(TOPICS)]}" + " and more" * (i % 7))
            for i in range(240)]
    for start in range(0, len(msgs), 60):
        m.add("t", WriteRequest(user_id="sam", infer=False, messages=msgs[start:start + 60]))
    yield m
    m.close()


def full_pool(os_: MemoryOS, req: SearchRequest) -> list[str]:
    """The reference: the whole fused pool loaded, then packed (what search did before)."""
    cset = os_.reader.candidates("t", req)
    assert cset is not None
    chosen = pack(os_.reader.rank(cset), top_k=req.top_k, token_budget=req.token_budget, cost=lambda c: c.tokens,
                  redundant=restated)
    return [c.cube.id for c in edge_order(chosen)]


@pytest.mark.parametrize("body", [
    {"query": "what did I think about the chess club?", "top_k": 5},
    {"query": "cat", "top_k": 30},
    {"query": "Osaka trip", "top_k": 10, "token_budget": 60},  # the budget skips big items: packing reads on
    {"query": "bakery", "top_k": 50, "time_range": {"start": "2024-03-01T00:00:00Z"}},
    {"query": "hospital", "top_k": 100},
])
def test_lazy_loading_returns_what_the_whole_pool_would(os_: MemoryOS, body: dict[str, object]) -> None:
    req = SearchRequest.model_validate({"user_id": "sam", **body})
    loaded: list[int] = []
    real = os_.records.get_memories

    def counting(tenant: str, ids: Sequence[str]) -> list[MemoryCube]:
        loaded.append(len(ids))
        return real(tenant, ids)

    os_.records.get_memories = counting  # type: ignore[method-assign]
    try:
        got = [r["id"] for r in os_.search("t", req).results]
    finally:
        del os_.records.get_memories
    assert got == full_pool(os_, req)
    assert got, "the query finds something"
    pool = len(os_.reader.candidates("t", req).candidates)  # type: ignore[union-attr]
    early = req.token_budget is None and len(got) == req.top_k and req.top_k + 10 < pool
    assert early or req.token_budget is not None  # every case without a budget fills top_k from part of the pool
    if early:
        assert sum(loaded) < pool  # stopped early: not the whole pool
        assert loaded[0] == req.top_k + 10
