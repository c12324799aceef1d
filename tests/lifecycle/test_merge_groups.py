"""`merge_groups` compares vectors a block of rows at a time; the groups do not depend on the block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from memsvc.lifecycle.consolidate import merge_groups
from memsvc.models import MemoryCube, MemoryType

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def cubes(n: int, types: list[MemoryType]) -> list[MemoryCube]:
    return [MemoryCube(id=f"c{i:03d}", tenant="t", user_id="u", type=types[i % len(types)], content=f"fact {i}",
                       created_at=T0 + timedelta(minutes=n - i)) for i in range(n)]


def test_blocks_give_the_groups_of_the_whole_matrix() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(12, 32))
    rows = np.concatenate([base, base[:6] + rng.normal(scale=0.02, size=(6, 32)), base[:2]])  # 8 near pairs
    vectors = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    found = merge_groups(cubes(len(vectors), [MemoryType.SEMANTIC]), vectors, 0.95)
    assert sorted(sorted(g) for g in found) == sorted([[0, 12, 18], [1, 13, 19], [2, 14], [3, 15], [4, 16], [5, 17]])
    for block in (1, 3, 7):
        assert merge_groups(cubes(len(vectors), [MemoryType.SEMANTIC]), vectors, 0.95, block=block) == found
    # oldest first inside a group (created_at falls with the index here)
    assert found[0][0] == max(found[0])


def test_types_never_mix_and_index_pairs_join_cubes_without_vectors() -> None:
    v = np.eye(4, dtype=np.float32)
    both = cubes(6, [MemoryType.SEMANTIC, MemoryType.PROCEDURAL])
    same = np.stack([v[0], v[0], v[1], v[2]])  # 0 (semantic) and 1 (procedural) are identical: no group
    assert merge_groups(both, same, 0.9) == []
    # cubes 4 and 5 have no vectors: the index found 4 near 2 and 5 near 1
    groups = merge_groups(both, same, 0.9, extra=[(2, 4), (1, 5), (0, 5)])
    assert sorted(sorted(g) for g in groups) == [[1, 5], [2, 4]]
