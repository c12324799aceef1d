"""Personalized PageRank and the memory scores built on it, on hand-made graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from memsvc.graph.matrix import build_adjacency, build_mentions
from memsvc.graph.ppr import (
    ROOT,
    UNREACHABLE,
    entity_seeds_from_memories,
    memory_scores,
    mention_counts,
    node_specificity,
    path_to,
    personalized_pagerank,
    rank_memories,
    seed_paths,
)


def undirected(n: int, edges: list[tuple[int, int]], weights: list[float] | None = None) -> sp.csr_matrix:
    s, o = zip(*edges, strict=True)
    return build_adjacency(n, list(s), list(o), weights or [1.0] * len(edges))


def directed(n: int, edges: list[tuple[int, int]]) -> sp.csr_matrix:
    s, o = zip(*edges, strict=True)
    return sp.csr_matrix((np.ones(len(edges)), (s, o)), shape=(n, n))


def test_chain_mass_decreases_with_distance_from_the_seed() -> None:
    r = personalized_pagerank(undirected(5, [(0, 1), (1, 2), (2, 3), (3, 4)]), {0: 1.0})
    assert list(np.argsort(-r)) == [0, 1, 2, 3, 4]
    assert np.all(np.diff(r) < 0)
    assert r.sum() == pytest.approx(1.0, abs=1e-12)


def test_star_seeded_at_a_leaf() -> None:
    a = undirected(5, [(0, 1), (0, 2), (0, 3), (0, 4)])
    r = personalized_pagerank(a, {1: 1.0})
    assert r[1] > r[0] > r[2]
    assert r[2] == pytest.approx(r[3]) and r[3] == pytest.approx(r[4])
    hub = personalized_pagerank(a, {0: 1.0})
    assert hub[0] == hub.max() and np.allclose(hub[1:], hub[1])


def test_only_the_seeded_component_gets_mass() -> None:
    a = undirected(5, [(0, 1), (1, 2), (3, 4)])
    r = personalized_pagerank(a, {0: 1.0})
    assert r[3] == 0.0 and r[4] == 0.0
    assert r[:3].sum() == pytest.approx(1.0)


def test_damping_extremes() -> None:
    a = undirected(4, [(0, 1), (1, 2), (2, 0), (2, 3)])
    seeds = np.array([3.0, 1.0, 0.0, 0.0])
    assert np.array_equal(personalized_pagerank(a, seeds, damping=0.0), seeds / 4)
    # nearly always walking: close to the stationary distribution, degree / (2 * |E|)
    walk = personalized_pagerank(a, seeds, damping=0.999, tol=1e-12, max_iter=100_000)
    assert np.allclose(walk, np.array([2, 2, 3, 1]) / 8, atol=5e-3)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            personalized_pagerank(a, seeds, damping=bad)


def test_dangling_node_returns_its_mass_to_the_seeds() -> None:
    # 0 -> 1, and 1 has no out-edge: r0 = 1 / (1 + d), r1 = d / (1 + d)
    r = personalized_pagerank(directed(2, [(0, 1)]), {0: 1.0}, damping=0.5, tol=1e-14)
    assert r == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    # an isolated seed keeps everything
    assert personalized_pagerank(sp.csr_matrix((3, 3)), {1: 1.0}).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("damping", [0.15, 0.5, 0.85])
@pytest.mark.parametrize("kind", ["undirected", "directed"])
def test_agrees_with_networkx(damping: float, kind: str) -> None:
    rng = np.random.default_rng(7)
    n, m = 300, 1200
    s, o, w = rng.integers(0, n, m), rng.integers(0, n, m), rng.random(m) + 0.1
    if kind == "undirected":
        a = build_adjacency(n, s, o, w)
        g: nx.Graph = nx.from_scipy_sparse_array(a)
    else:
        keep = s != o
        a = sp.coo_matrix((w[keep], (s[keep], o[keep])), shape=(n, n)).tocsr()
        g = nx.from_scipy_sparse_array(a, create_using=nx.DiGraph)
    seeds = {int(i): float(rng.random() + 0.5) for i in rng.integers(0, n, 6)}
    expected = nx.pagerank(g, alpha=damping, personalization=seeds, tol=1e-13, max_iter=1000, weight="weight")
    got = personalized_pagerank(a, seeds, damping=damping, tol=1e-12, max_iter=1000)
    assert np.abs(got - np.array([expected[i] for i in range(n)])).max() < 1e-6
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_seed_forms_and_errors() -> None:
    a = undirected(3, [(0, 1), (1, 2)])
    assert np.allclose(personalized_pagerank(a, {0: 2.0, 2: 2.0}), personalized_pagerank(a, np.array([1, 0, 1])))
    assert personalized_pagerank(sp.csr_matrix((0, 0)), {}).shape == (0,)
    for bad in ({}, {0: 0.0}, {0: -1.0}, {3: 1.0}, np.array([1.0, 0.0])):
        with pytest.raises(ValueError):
            personalized_pagerank(a, bad)
    with pytest.raises(ValueError):
        personalized_pagerank(sp.csr_matrix(np.array([[0.0, -1.0], [-1.0, 0.0]])), {0: 1.0})


def test_specificity_and_memory_scores() -> None:
    # memories x entities: m0 mentions e0, e1; m1 mentions e1, e2; m2 mentions e1
    mentions = build_mentions(3, 4, [0, 0, 1, 1, 2], [0, 1, 1, 2, 1], [1.0, 1.0, 1.0, 2.0, 1.0])
    counts = mention_counts(mentions)
    assert counts.tolist() == [1, 3, 1, 0]
    assert node_specificity(counts).tolist() == [1.0, 1 / 3, 1.0, 1.0]
    assert memory_scores(mentions, [0.5, 0.2, 0.3, 0.0]).tolist() == pytest.approx([0.7, 0.8, 0.2])
    assert entity_seeds_from_memories(mentions, [1.0, 0.0, 0.5]).tolist() == [1.0, 1.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        memory_scores(mentions, [1.0])


def test_rank_memories_prefers_memories_near_the_seed() -> None:
    # entities: 0 alice, 1 berlin, 2 cat, 3 miso, 4 rome; memories: 0 {alice, berlin}, 1 {cat, miso}, 2 {rome}
    mentions = build_mentions(3, 5, [0, 0, 1, 1, 2], [0, 1, 2, 3, 4], [1.0] * 5)
    adjacency = build_adjacency(5, [0, 0, 3], [1, 2, 4], [1.0, 1.0, 1.0], mentions)
    scores = rank_memories(adjacency, mentions, {1: 1.0})
    assert list(np.argsort(-scores)) == [0, 1, 2]
    assert rank_memories(adjacency, mentions, {}).tolist() == [0.0, 0.0, 0.0]


def test_paths_from_seeds() -> None:
    a = undirected(6, [(0, 1), (1, 2), (2, 3), (4, 5)])
    pred = seed_paths(a, [0, 3])
    assert pred[0] == ROOT and pred[3] == ROOT and pred[4] == UNREACHABLE
    assert path_to(pred, 1) == [0, 1]
    assert path_to(pred, 2) == [3, 2]
    assert path_to(pred, 3) == [3]
    assert path_to(pred, 5) == []
    assert seed_paths(a, []).tolist() == [UNREACHABLE] * 6


def test_adjacency_builder_sums_relations_and_co_mentions() -> None:
    mentions = build_mentions(2, 3, [0, 0, 1, 1], [0, 1, 1, 2], [1.0, 2.0, 1.0, 1.0])
    a = build_adjacency(3, [0, 1, 1], [1, 0, 1], [1.0, 0.5, 9.0], mentions)
    # 0-1: relations 1 + 0.5 both ways, co-mention 1*2; 1-2: co-mention 1*1; self-loop dropped
    assert a.toarray().tolist() == [[0.0, 3.5, 0.0], [3.5, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_joint_adjacency_puts_memories_beside_entities() -> None:
    from memsvc.graph.ppr import joint_adjacency

    a = sp.csr_matrix(np.array([[0.0, 2.0], [2.0, 0.0]]))
    m = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 3.0], [0.0, 0.0]]))
    j = joint_adjacency(a, m).toarray()
    assert j.tolist() == [
        [0.0, 2.0, 1.0, 0.5, 0.0],
        [2.0, 0.0, 0.0, 3.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 3.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    with pytest.raises(ValueError):
        joint_adjacency(a, sp.csr_matrix(np.ones((2, 3))))


def test_rank_memories_joint_is_ppr_mass_of_memory_nodes() -> None:
    from memsvc.graph.ppr import joint_adjacency, rank_memories_joint

    a = sp.csr_matrix(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    m = sp.csr_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    e_seeds, m_seeds = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.25])
    got = rank_memories_joint(a, m, e_seeds, m_seeds, 0.5)
    full = personalized_pagerank(joint_adjacency(a, m), np.concatenate([e_seeds, m_seeds]), 0.5)
    assert np.allclose(got, full[3:])
    assert got[0] > got[2] > got[1]  # seeded entity's memory, then the seeded memory, then the middle
    assert rank_memories_joint(a, m, np.zeros(3), np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        rank_memories_joint(a, m, np.zeros(2), np.zeros(3))
    # a prebuilt walk of the joint graph gives the same scores, and must fit the seeds
    from memsvc.graph.ppr import Walk

    walk = Walk.of(joint_adjacency(a, m))
    assert np.array_equal(rank_memories_joint(a, m, e_seeds, m_seeds, 0.5, walk), got)
    assert np.array_equal(rank_memories_joint(a, m, m_seeds, e_seeds, 0.5, walk),
                          rank_memories_joint(a, m, m_seeds, e_seeds, 0.5))
    with pytest.raises(ValueError):
        rank_memories_joint(a, m, e_seeds, m_seeds, 0.5, Walk.of(a))
