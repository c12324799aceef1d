"""Build a scope's matrices from index triples; every graph store calls these, so equal data
gives equal matrices whatever the backend.

* mentions: memory x entity, `M[m, e]` = the mention's weight.
* adjacency: entity x entity, symmetric, no self-loops:
  `A = R + R^T + offdiag(M^T M)`, where `R[s, o]` sums the weights of relations s -> o,
  so a relation adds its weight in both directions and two entities mentioned together
  by a memory gain the product of their mention weights (1 with default weights) per memory.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.ArrayLike
FloatArray = npt.ArrayLike


def build_mentions(
    n_memories: int, n_entities: int, memory_idx: IntArray, entity_idx: IntArray, weights: FloatArray
) -> sp.csr_matrix:
    """Memory x entity CSR (a repeated pair keeps the sum of its weights)."""
    rows = np.asarray(memory_idx, dtype=np.int64)
    cols = np.asarray(entity_idx, dtype=np.int64)
    data = np.asarray(weights, dtype=np.float64)
    m = sp.coo_matrix((data, (rows, cols)), shape=(n_memories, n_entities)).tocsr()
    m.sum_duplicates()
    return m


def build_adjacency(
    n_entities: int,
    subject_idx: IntArray,
    object_idx: IntArray,
    weights: FloatArray,
    mentions: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """The symmetric weighted entity graph of relations plus co-mentions (see module doc)."""
    s = np.asarray(subject_idx, dtype=np.int64)
    o = np.asarray(object_idx, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    r = sp.coo_matrix((w, (s, o)), shape=(n_entities, n_entities)).tocsr()
    a = r + r.T
    if mentions is not None and mentions.nnz:
        m = sp.csr_matrix(mentions, dtype=np.float64)
        a = a + (m.T @ m)
    a = sp.csr_matrix(a, dtype=np.float64)
    a = sp.csr_matrix(a - sp.diags(a.diagonal()))
    a.eliminate_zeros()
    a.sort_indices()
    return a
