"""UPDATE and DELETE operations on stored memories, staged before the write commits.

An LLM executor (Mem0-style) or an agent (Memory-as-Action) names the memory it changes. The
change keeps history: the cube's version goes up and the store records a snapshot; an UPDATE adds
the messages it restates to the memory's `source_ids` (provenance is never dropped); a DELETE is
the soft delete of `DELETE /v1/memories/{id}`. Operations naming a memory that is not in the
request's user scope are declined with a reason (for an agent: rejected before anything commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from memsvc.models import REASON_KEY, ChangeKind, MemoryCube, MemoryStatus, OutboxEntry, OutboxOp
from memsvc.ports import RecordStore
from memsvc.skills.types import Operation, OpKind


@dataclass
class StagedChanges:
    changed: list[tuple[MemoryCube, ChangeKind, Operation]] = field(default_factory=list)
    declined: list[tuple[Operation, str]] = field(default_factory=list)


def stage_changes(
    ops: Sequence[Operation], records: RecordStore, tenant: str, user_id: str, now: datetime,
) -> StagedChanges:
    """Apply UPDATE / DELETE operations to copies of the stored cubes (nothing is written here)."""
    out = StagedChanges()
    targets = {c.id: c for c in records.get_memories(tenant, [o.target_id for o in ops if o.target_id])}
    for op in ops:
        cube = targets.get(op.target_id or "")
        if cube is None or cube.user_id != user_id:
            out.declined.append((op, f"no memory {op.target_id} in this user's scope"))
            continue
        if cube.status is MemoryStatus.DELETED:
            out.declined.append((op, "the memory is deleted"))
            continue
        if op.op is OpKind.UPDATE:
            if not op.content.strip():
                out.declined.append((op, "an update needs content"))
                continue
            if op.content == cube.content and not op.type:
                out.declined.append((op, "the content is unchanged"))
                continue
            cube.content = op.content
            if op.type is not None:
                cube.type = op.type
            if op.importance is not None:
                cube.importance = op.importance
            cube.source_ids = list(dict.fromkeys([*cube.source_ids, *op.source_ids]))
            change = ChangeKind.UPDATE
        else:
            cube.status = MemoryStatus.DELETED
            change = ChangeKind.DELETE
        if op.reason:
            cube.metadata = {**cube.metadata, REASON_KEY: op.reason}
        cube.version += 1
        cube.updated_at = now
        out.changed.append((cube, change, op))
    return out


def change_entries(tenant: str, user_id: str, changed: Sequence[tuple[MemoryCube, ChangeKind, Operation]]) -> list[OutboxEntry]:
    """What the derived stores must do: re-embed and re-extract updated memories, drop deleted ones."""
    updated = [c.id for c, change, _ in changed if change is ChangeKind.UPDATE]
    deleted = [c.id for c, change, _ in changed if change is ChangeKind.DELETE]
    entries = []
    if updated:
        ids = {"user_id": user_id, "ids": updated}
        entries += [OutboxEntry(tenant=tenant, op=op, payload=ids)
                    for op in (OutboxOp.UPSERT_VECTORS, OutboxOp.DELETE_GRAPH, OutboxOp.INDEX_GRAPH)]
    if deleted:
        ids = {"user_id": user_id, "ids": deleted}
        entries += [OutboxEntry(tenant=tenant, op=op, payload=ids) for op in (OutboxOp.DELETE_VECTORS, OutboxOp.DELETE_GRAPH)]
    return entries
