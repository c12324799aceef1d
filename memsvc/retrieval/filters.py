"""The pushed-down `VectorFilter`, re-checked on the source-of-truth cube."""

from __future__ import annotations

from memsvc.models import MemoryCube, as_utc
from memsvc.ports import VectorFilter


def matches(cube: MemoryCube, flt: VectorFilter) -> bool:
    """True when `cube` satisfies every condition of `flt` (same semantics as the vector index)."""
    if cube.tenant != flt.tenant:
        return False
    if flt.user_id is not None and cube.user_id != flt.user_id:
        return False
    if flt.types is not None and cube.type not in flt.types:
        return False
    if flt.statuses is not None and cube.status not in flt.statuses:
        return False
    if flt.agent_id is not None and cube.agent_id != flt.agent_id:
        return False
    if flt.session_id is not None and cube.session_id != flt.session_id:
        return False
    if flt.valid_at is not None and not cube.valid_at(flt.valid_at):
        return False
    if flt.event_from is not None or flt.event_to is not None:
        when = as_utc(cube.event_time)
        if when is None:
            return False
        if flt.event_from is not None and when < flt.event_from:
            return False
        if flt.event_to is not None and when >= flt.event_to:
            return False
    if flt.metadata and any(cube.metadata.get(k) != v for k, v in flt.metadata.items()):
        return False
    return flt.ids is None or cube.id in flt.ids
