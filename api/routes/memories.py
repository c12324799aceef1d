"""/v1/memories, /v1/jobs and /v1/feedback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import MemoryOSDep, PrincipalDep, UserIdQuery, WriterDep
from api.errors import AUTHED, error_responses
from memsvc.models import MemoryStatus, MemoryType
from memsvc.ports import MemoryQuery
from memsvc.schemas import (
    FeedbackRequest,
    MemoryPatch,
    SearchRequest,
    SearchResult,
    WriteRequest,
    WriteResult,
)

router = APIRouter(prefix="/v1", tags=["memories"], responses=error_responses(*AUTHED))


@router.post("/memories", response_model=WriteResult, responses={
    202: {"description": "accepted as a job (`wait: false`): `{\"job_id\"}`"}, **error_responses(403, 404, 409, 413)})
def write_memories(body: WriteRequest, os_: MemoryOSDep, who: WriterDep) -> Any:
    """Write messages; memories are derived from them (episodic always, more with `infer`). Optional
    `operations` are the agent's own inserts, updates and deletes (Memory-as-Action); the answer then
    also lists the memories they `changed`."""
    if not body.wait:
        job = os_.submit(who.tenant, body, actor=who.actor)
        return JSONResponse({"job_id": job.id}, status_code=202)
    result = os_.add(who.tenant, body, actor=who.actor)
    if result.changed is None:  # a write without operations answers exactly as before they existed
        return JSONResponse(result.model_dump(mode="json", exclude={"changed"}))
    return result


@router.get("/jobs/{job_id}", responses=error_responses(404))
def get_job(job_id: str, os_: MemoryOSDep, who: PrincipalDep) -> dict[str, Any]:
    job = os_.job(who.tenant, job_id)
    return {"id": job.id, "state": job.state.value, "result": job.result, "error": job.error,
            "created_at": job.created_at.isoformat(), "updated_at": job.updated_at.isoformat()}


@router.post("/memories/search", response_model=SearchResult, responses=error_responses(413))
def search_memories(body: SearchRequest, os_: MemoryOSDep, who: PrincipalDep) -> SearchResult:
    """Recall within `top_k` / `token_budget`, in the order to show a reader (strongest at the edges; `rank` 1 = best)."""
    return os_.search(who.tenant, body, actor=who.actor)


@router.get("/memories")
def list_memories(
    os_: MemoryOSDep, who: PrincipalDep,
    user_id: UserIdQuery = None,
    type: Annotated[list[MemoryType] | None, Query()] = None,
    status: Annotated[list[MemoryStatus] | None, Query()] = None,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, description="at most `MEMSVC_LIMITS__MAX_LIST_LIMIT` (default 500)")] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    page = os_.list_memories(who.tenant, MemoryQuery(user_id=user_id, types=type, statuses=status, text=q, limit=limit, cursor=cursor))
    return {"items": [c.public() for c in page.items], "next_cursor": page.next_cursor}


@router.get("/memories/{memory_id}", responses=error_responses(404))
def get_memory(memory_id: str, os_: MemoryOSDep, who: PrincipalDep) -> dict[str, Any]:
    return os_.get(who.tenant, memory_id).public()


@router.patch("/memories/{memory_id}", responses=error_responses(403, 404, 409, 413))
def patch_memory(memory_id: str, body: MemoryPatch, os_: MemoryOSDep, who: WriterDep) -> dict[str, Any]:
    return os_.update(who.tenant, memory_id, body, actor=who.actor).public()


@router.delete("/memories/{memory_id}", responses=error_responses(403, 404))
def delete_memory(memory_id: str, os_: MemoryOSDep, who: WriterDep) -> dict[str, Any]:
    return os_.delete(who.tenant, memory_id, actor=who.actor).public()


@router.get("/memories/{memory_id}/history", responses=error_responses(404))
def memory_history(memory_id: str, os_: MemoryOSDep, who: PrincipalDep) -> dict[str, Any]:
    versions = os_.history(who.tenant, memory_id)
    return {"memory_id": memory_id, "versions": [
        {"version": v.version, "change": v.change.value, "actor": v.actor,
         "changed_at": v.changed_at.isoformat(), "memory": _public_snapshot(v.snapshot)}
        for v in versions
    ]}


def _public_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "type", "content", "user_id", "agent_id", "session_id", "source_ids", "created_at",
            "event_time", "valid_from", "valid_to", "importance", "version", "status", "metadata")
    return {k: snapshot.get(k) for k in keep}


@router.post("/feedback", responses=error_responses(403, 404, 413))
def feedback(body: FeedbackRequest, os_: MemoryOSDep, who: WriterDep) -> dict[str, Any]:
    return os_.feedback(who.tenant, body, actor=who.actor)
