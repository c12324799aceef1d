"""Baselines: RRF exactly, BM25 / dense / hybrid clients on a tiny scope."""

from __future__ import annotations

import pytest

from evals.baselines import BM25Client, DenseClient, Encoder, HybridClient, rrf
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest

TURNS = [
    ("t1", "Caroline", "I went to a LGBTQ support group yesterday."),
    ("t2", "Melanie", "I love painting sunsets at the lake."),
    ("t3", "Caroline", "My dog chewed my running shoes again."),
]


def _write(client: object) -> None:
    msgs = [MessageIn(id=i, role="user", name=n, content=c) for i, n, c in TURNS]
    result = client.add(WriteRequest(user_id="u1", messages=msgs))  # type: ignore[attr-defined]
    assert [m["source_ids"] for m in result.written] == [["t1"], ["t2"], ["t3"]]
    again = client.add(WriteRequest(user_id="u1", messages=msgs[:1]))  # type: ignore[attr-defined]
    assert again.skipped[0].message_id == "t1"
    client.flush()  # type: ignore[attr-defined]


def test_rrf_exact() -> None:
    fused = rrf([["a", "b", "c"], ["b", "a", "d"]], k=60)
    assert [d for d, _ in fused] == ["a", "b", "c", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62, abs=1e-15)
    assert fused[2][1] == pytest.approx(1 / 63, abs=1e-15)
    assert rrf([["x"]], k=0) == [("x", 1.0)]


def test_bm25_ranks_and_drops_zero_scores() -> None:
    client = BM25Client()
    _write(client)
    res = client.search(SearchRequest(user_id="u1", query="support group", top_k=10))
    assert [r["id"] for r in res.results] == ["t1"]
    assert res.results[0]["content"] == "Caroline: I went to a LGBTQ support group yesterday."
    assert client.search(SearchRequest(user_id="u1", query="zebra", top_k=10)).results == []
    assert client.search(SearchRequest(user_id="other", query="support", top_k=10)).results == []


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_dense_and_hybrid(encoder: Encoder) -> None:
    dense, hybrid = DenseClient(encoder), HybridClient(encoder)
    _write(dense)
    _write(hybrid)
    res = dense.search(SearchRequest(user_id="u1", query="what does Melanie paint?", top_k=2))
    assert [r["id"] for r in res.results][0] == "t2" and len(res.results) == 2
    assert res.results[0]["score"] >= res.results[1]["score"]
    fused = hybrid.search(SearchRequest(user_id="u1", query="support group", top_k=3))
    assert [r["id"] for r in fused.results][0] == "t1" and len(fused.results) == 3
