"""What a write resolves its facts against: the scope as SQL holds it, not as the index shows it.

The vector index lags SQL (its entries are applied after the commit, and may be retrying), so
it only proposes candidates; SQL decides. Repeats: the nearest indexed facts are kept only if
SQL still holds them active with the same type, and the memories whose index state is not
confirmed yet (an outbox entry of theirs is not done) are compared by their own vectors.
Slot holders come from SQL directly. Together with the scope version the write commits against
(`UnitOfWork.guard_scope`), two writes of one user can neither both miss each other nor both
supersede the same fact, whatever process they run in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from threading import Lock

import numpy as np

from memsvc.models import MemoryCube, MemoryStatus, MemoryType
from memsvc.ports import RecordStore, VectorFilter, VectorIndex

REPEAT_CANDIDATES = 5
SLOT_TYPES = (MemoryType.SEMANTIC, MemoryType.REFINED)


class RecentVectors:
    """Vectors of cubes this process wrote lately, so an unindexed cube is not embedded again."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = Lock()

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._items.update(vectors)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, cube_id: str) -> np.ndarray | None:
        with self._lock:
            return self._items.get(cube_id)


class ScopeView:
    """One write's reads of one user scope (see the module doc)."""

    def __init__(
        self, records: RecordStore, vectors: VectorIndex, tenant: str, user_id: str, threshold: float,
        embed: Callable[[Sequence[MemoryCube]], np.ndarray], recent: RecentVectors,
    ) -> None:
        self.records = records
        self.vectors = vectors
        self.tenant = tenant
        self.user_id = user_id
        self.threshold = threshold
        self._embed = embed
        self._recent = recent
        self._unindexed: list[tuple[MemoryCube, np.ndarray]] | None = None

    def repeats(self, cube_type: MemoryType, vec: np.ndarray) -> bool:
        """Whether an active stored cube of the type states the same (cosine >= threshold)."""
        flt = VectorFilter(tenant=self.tenant, user_id=self.user_id, types=[cube_type], statuses=[MemoryStatus.ACTIVE])
        near = [i for i, score in self.vectors.search(vec.tolist(), flt, REPEAT_CANDIDATES) if score >= self.threshold]
        if near and any(_active(c, cube_type) for c in self.records.get_memories(self.tenant, near)):
            return True
        return any(_active(c, cube_type) and float(vec @ v) >= self.threshold for c, v in self.unindexed())

    def slot_holders(self, slot: str) -> list[MemoryCube]:
        """Active stored facts that set the same single-valued slot."""
        return self.records.slot_holders(self.tenant, self.user_id, slot, SLOT_TYPES)

    def unindexed(self) -> list[tuple[MemoryCube, np.ndarray]]:
        """The scope's cubes whose index state is not confirmed yet, with their vectors."""
        if self._unindexed is None:
            ids = sorted(self.records.unindexed_memory_ids(self.tenant, self.user_id))
            cubes = [c for c in self.records.get_memories(self.tenant, ids) if c.status is MemoryStatus.ACTIVE]
            known = {c.id: v for c in cubes if c.version == 1 and (v := self._recent.get(c.id)) is not None}
            todo = [c for c in cubes if c.id not in known]
            if todo:
                known.update(zip((c.id for c in todo), self._embed(todo), strict=True))
            self._unindexed = [(c, known[c.id]) for c in cubes]
        return self._unindexed


def _active(cube: MemoryCube, cube_type: MemoryType) -> bool:
    return cube.status is MemoryStatus.ACTIVE and cube.type is cube_type
