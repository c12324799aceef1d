"""Personalized PageRank over a scope's entity graph, and the scores it gives memories.

Conventions (the same as networkx and HippoRAG's igraph call):

* `adjacency[i, j]` is the weight of the edge i -> j; the graph stores give symmetric matrices,
  so direction does not matter there. Weights must be non-negative.
* The walk leaves node i along edge i -> j with probability `A[i, j] / sum_k A[i, k]`; as a
  matrix this is the column-normalised transpose `P = (D^-1 A)^T`, so `P @ r` moves mass.
* `damping` is the probability of following an edge at each step (HippoRAG uses 0.5);
  with probability `1 - damping` the walker jumps back to the personalization vector.
* A dangling node (no out-edges) sends its whole mass back to the personalization vector.

    r = damping * (P @ r + dangling_mass(r) * p) + (1 - damping) * p

Every function here is pure: matrices and vectors in, vectors out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

FloatArray = npt.NDArray[np.float64]

DEFAULT_DAMPING = 0.5


def transition_matrix(adjacency: sp.csr_matrix) -> tuple[sp.csr_matrix, npt.NDArray[np.bool_]]:
    """`P = (D^-1 A)^T` as CSR, and the mask of dangling nodes (zero out-weight)."""
    a = sp.csr_matrix(adjacency, dtype=np.float64)
    n, m = a.shape
    if n != m:
        raise ValueError(f"adjacency must be square, got {a.shape}")
    if a.nnz and float(a.data.min()) < 0.0:
        raise ValueError("adjacency weights must be non-negative")
    out = np.asarray(a.sum(axis=1)).ravel()
    dangling = out <= 0.0
    inv = np.zeros(n, dtype=np.float64)
    np.divide(1.0, out, out=inv, where=~dangling)
    p = sp.csr_matrix((sp.diags(inv) @ a).T)
    return p, dangling


def seed_vector(n: int, seeds: Mapping[int, float] | npt.ArrayLike) -> FloatArray:
    """The personalization vector of length `n` (non-negative, summing to 1).

    `seeds` is `{node index: weight}` (repeated weights would add up) or a dense vector.
    """
    if isinstance(seeds, Mapping):
        p = np.zeros(n, dtype=np.float64)
        for node, weight in seeds.items():
            if not 0 <= int(node) < n:
                raise ValueError(f"seed node {node} outside 0..{n - 1}")
            p[int(node)] += float(weight)
    else:
        p = np.array(seeds, dtype=np.float64).ravel()
        if p.shape[0] != n:
            raise ValueError(f"seed vector has length {p.shape[0]}, graph has {n} nodes")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError("seed weights must be finite and non-negative")
    total = float(p.sum())
    if total <= 0.0:
        raise ValueError("seeds carry no mass; skip PPR when nothing seeds it")
    return p / total


@dataclass(frozen=True)
class Walk:
    """A graph's random walk (`transition_matrix`), built once and run for many seed vectors.

    Building the transition matrix costs more than the walk itself on graphs of a few thousand
    nodes, so the read path keeps one `Walk` per graph snapshot and reuses it across queries.
    """

    trans: sp.csr_matrix
    dangling: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, adjacency: sp.csr_matrix) -> Walk:
        trans, dangling = transition_matrix(adjacency)
        return cls(trans, dangling)

    @property
    def n(self) -> int:
        return int(self.trans.shape[0])

    def run(
        self, seeds: Mapping[int, float] | npt.ArrayLike, damping: float = DEFAULT_DAMPING,
        tol: float = 1e-8, max_iter: int = 100,
    ) -> FloatArray:
        """Stationary distribution of the seeded walk, by power iteration (sums to 1).

        Stops when the L1 change of an iteration is below `tol`, or after `max_iter` iterations
        (the last iterate is returned; with `damping < 1` the error shrinks by `damping` per step).
        """
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {damping}")
        if self.n == 0:
            return np.zeros(0, dtype=np.float64)
        p = seed_vector(self.n, seeds)
        if damping == 0.0:
            return p
        has_dangling = bool(self.dangling.any())
        teleport = (1.0 - damping) * p
        r = p.copy()
        for _ in range(max_iter):
            nxt = self.trans @ r
            nxt *= damping
            leaked = float(r[self.dangling].sum()) if has_dangling else 0.0
            nxt += teleport + (damping * leaked) * p
            err = float(np.abs(nxt - r).sum())
            r = nxt
            if err < tol:
                break
        out: FloatArray = r / float(r.sum())
        return out


def personalized_pagerank(
    adjacency: sp.csr_matrix,
    seeds: Mapping[int, float] | npt.ArrayLike,
    damping: float = DEFAULT_DAMPING,
    tol: float = 1e-8,
    max_iter: int = 100,
) -> FloatArray:
    """PPR on `adjacency` from `seeds` (see `Walk.run`)."""
    return Walk.of(adjacency).run(seeds, damping, tol, max_iter)


def mention_counts(mentions: sp.csr_matrix) -> npt.NDArray[np.int64]:
    """For each entity (column), how many memories (rows) mention it."""
    m = sp.csr_matrix(mentions)
    m.eliminate_zeros()
    return np.bincount(m.indices, minlength=m.shape[1]).astype(np.int64)


def node_specificity(counts: npt.ArrayLike) -> FloatArray:
    """HippoRAG's node specificity `1 / |memories mentioning the node|`; 1 where none do."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    out = np.ones_like(c)
    np.divide(1.0, c, out=out, where=c > 0)
    return out


def memory_scores(mentions: sp.csr_matrix, entity_scores: npt.ArrayLike) -> FloatArray:
    """Each memory's score: the mention-weighted sum of its entities' scores (`M @ s`)."""
    s = np.asarray(entity_scores, dtype=np.float64).ravel()
    if mentions.shape[1] != s.shape[0]:
        raise ValueError(f"mentions has {mentions.shape[1]} entity columns, scores has {s.shape[0]}")
    return np.asarray(mentions @ s, dtype=np.float64).ravel()


def rank_memories(
    adjacency: sp.csr_matrix,
    mentions: sp.csr_matrix,
    seeds: Mapping[int, float],
    damping: float = DEFAULT_DAMPING,
    *,
    specificity: bool = True,
) -> FloatArray:
    """Seeds -> (specificity-weighted) PPR over entities -> one score per memory row.

    Returns zeros when no seed has weight, so callers need no special case.
    """
    n = adjacency.shape[0]
    weights = np.zeros(n, dtype=np.float64)
    for node, weight in seeds.items():
        weights[int(node)] += float(weight)
    if specificity:
        weights *= node_specificity(mention_counts(mentions))
    if not weights.any():
        return np.zeros(mentions.shape[0], dtype=np.float64)
    return memory_scores(mentions, personalized_pagerank(adjacency, weights, damping))


def joint_adjacency(adjacency: sp.csr_matrix, mentions: sp.csr_matrix) -> sp.csr_matrix:
    """Entities and memories as one graph (HippoRAG 2's passage nodes): `[[A, M^T], [M, 0]]`."""
    a = sp.csr_matrix(adjacency, dtype=np.float64)
    m = sp.csr_matrix(mentions, dtype=np.float64)
    if m.shape[1] != a.shape[0]:
        raise ValueError(f"mentions has {m.shape[1]} entity columns, adjacency has {a.shape[0]} nodes")
    return sp.csr_matrix(sp.bmat([[a, m.T], [m, None]], format="csr"))


def rank_memories_joint(
    adjacency: sp.csr_matrix,
    mentions: sp.csr_matrix,
    entity_seeds: npt.ArrayLike,
    memory_seeds: npt.ArrayLike,
    damping: float = DEFAULT_DAMPING,
    walk: Walk | None = None,
) -> FloatArray:
    """PPR over entities and memory nodes together; each memory's score is its own PPR mass.

    `entity_seeds` (one weight per entity) and `memory_seeds` (one per memory) form one
    personalization vector (their relative sizes matter, not their scale). Returns zeros when
    no seed has weight. `walk`, when given, must be `Walk.of(joint_adjacency(adjacency, mentions))`
    (a cached one saves rebuilding it).
    """
    e = np.asarray(entity_seeds, dtype=np.float64).ravel()
    m = np.asarray(memory_seeds, dtype=np.float64).ravel()
    if e.shape[0] != adjacency.shape[0] or m.shape[0] != mentions.shape[0]:
        raise ValueError("seed vectors must have one weight per entity and per memory")
    p = np.concatenate([e, m])
    if not p.any():
        return np.zeros(m.shape[0], dtype=np.float64)
    if walk is None:
        walk = Walk.of(joint_adjacency(adjacency, mentions))
    elif walk.n != p.shape[0]:
        raise ValueError(f"walk has {walk.n} nodes, seeds {p.shape[0]}")
    r = walk.run(p, damping)
    out: FloatArray = r[e.shape[0] :]
    return out


def entity_seeds_from_memories(mentions: sp.csr_matrix, memory_weights: npt.ArrayLike) -> FloatArray:
    """Spread memory weights (e.g. dense-retrieval hits) onto the entities they mention (`M^T w`)."""
    w = np.asarray(memory_weights, dtype=np.float64).ravel()
    if mentions.shape[0] != w.shape[0]:
        raise ValueError(f"mentions has {mentions.shape[0]} memory rows, weights has {w.shape[0]}")
    return np.asarray(mentions.T @ w, dtype=np.float64).ravel()


UNREACHABLE = -2
ROOT = -1


def seed_paths(adjacency: sp.csr_matrix, seeds: Sequence[int]) -> npt.NDArray[np.int64]:
    """For every node, its predecessor on a fewest-hops path from the nearest seed.

    Seeds hold `ROOT` (-1), nodes no seed reaches hold `UNREACHABLE` (-2). Feed the array to
    `path_to` to explain why a memory scored ("alice -> berlin").
    """
    n = adjacency.shape[0]
    out = np.full(n, UNREACHABLE, dtype=np.int64)
    if n == 0 or not len(seeds):
        return out
    _, pred, sources = csgraph.dijkstra(
        sp.csr_matrix(adjacency), directed=True, indices=np.asarray(seeds, dtype=np.int64),
        unweighted=True, return_predecessors=True, min_only=True,
    )
    reached = np.asarray(sources) >= 0
    out[reached] = np.where(np.asarray(pred)[reached] >= 0, np.asarray(pred)[reached], ROOT)
    return out


def path_to(predecessors: npt.NDArray[np.int64], target: int) -> list[int]:
    """Nodes from the nearest seed to `target` (just `[target]` for a seed; [] if unreachable)."""
    if predecessors[target] == UNREACHABLE:
        return []
    path = [int(target)]
    while predecessors[path[-1]] >= 0:
        path.append(int(predecessors[path[-1]]))
        if len(path) > len(predecessors):
            raise ValueError("predecessor array has a cycle")
    path.reverse()
    return path
