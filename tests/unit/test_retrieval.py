"""Fusion, packing, reader order and query kinds on hand-made inputs."""

from memsvc.retrieval.fusion import rrf
from memsvc.retrieval.packing import count_tokens, edge_order, pack
from memsvc.retrieval.query import QueryKind, classify
from memsvc.text_cache import CACHED_CHARS


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf({"dense": [("a", 0.9), ("b", 0.8)], "keyword": [("b", 5.0), ("c", 1.0)]}, k=60)
    assert [f.id for f in fused] == ["b", "a", "c"]
    assert fused[0].score == 1 / 62 + 1 / 61
    assert fused[0].ranks == {"dense": 2, "keyword": 1}
    assert fused[1].score == 1 / 61
    assert fused[2].scores == {"keyword": 1.0}


def test_rrf_weights_and_ties_are_deterministic() -> None:
    fused = rrf({"dense": [("x", 1.0)], "graph": [("y", 1.0)]}, weights={"dense": 1.0, "graph": 0.0})
    assert [f.id for f in fused] == ["x"]
    tie = rrf({"a": [("q", 1.0)], "b": [("p", 1.0)]})
    assert [f.id for f in tie] == ["p", "q"]


def test_rrf_ignores_repeated_ids_within_a_ranking() -> None:
    fused = rrf({"dense": [("a", 1.0), ("a", 0.5), ("b", 0.4)]})
    assert fused[1].ranks == {"dense": 2}


def test_pack_respects_top_k_and_budget_and_skips_what_does_not_fit() -> None:
    items = [("a", 5), ("b", 10), ("c", 3), ("d", 1)]
    assert pack(items, top_k=10, token_budget=9, cost=lambda i: i[1]) == [("a", 5), ("c", 3), ("d", 1)]
    assert pack(items, top_k=2, token_budget=None, cost=lambda i: i[1]) == [("a", 5), ("b", 10)]
    assert pack(items, top_k=3, token_budget=0, cost=lambda i: i[1]) == []


def test_edge_order_puts_the_strongest_at_both_ends() -> None:
    assert edge_order([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert edge_order([1, 2]) == [1, 2]
    assert edge_order([]) == []


def test_count_tokens() -> None:
    assert count_tokens("Alice moved to Berlin.") == 5
    assert count_tokens("") == 0
    assert count_tokens("internationalization") == 4
    long = "Alice moved to Berlin. " * (CACHED_CHARS // 10)  # past the cache's length: counted the same
    assert len(long) > CACHED_CHARS and count_tokens(long) == 5 * (CACHED_CHARS // 10)


def test_classify_query_kinds() -> None:
    assert classify("When did Alice move to Berlin?") is QueryKind.TEMPORAL
    assert classify("What is Bob's favorite food?") is QueryKind.PREFERENCE
    assert classify("How do I reset the router?") is QueryKind.PROCEDURAL
    assert classify("Where does Alice live?") is QueryKind.FACTUAL


def test_rrf_near_equal_scores_share_a_rank_with_tie_tolerance() -> None:
    kw = [("cat", 0.448), ("cat2", 0.448), ("berlin", 0.439), ("far", 0.2)]
    fused = rrf({"keyword": kw}, tie_tolerance={"keyword": 0.05})
    assert {f.id: f.ranks["keyword"] for f in fused} == {"cat": 1, "cat2": 1, "berlin": 1, "far": 4}
    both = rrf({"dense": [("berlin", 0.66), ("cat", 0.45)], "keyword": kw}, tie_tolerance={"keyword": 0.05})
    assert both[0].id == "berlin"
    assert [f.ranks["keyword"] for f in rrf({"keyword": kw})] == [1, 2, 3, 4]
