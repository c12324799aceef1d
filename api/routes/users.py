"""/v1/users: purge and graph."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import MemoryOSDep, PrincipalDep, UserIdPath, WriterDep
from api.errors import AUTHED, error_responses

router = APIRouter(prefix="/v1/users", tags=["users"], responses=error_responses(*AUTHED))


@router.delete("/{user_id}", responses=error_responses(403))
def purge_user(user_id: UserIdPath, os_: MemoryOSDep, who: WriterDep) -> dict[str, Any]:
    """Remove everything memsvc holds about a user: records, vectors, graph, logs."""
    return {"user_id": user_id, "deleted": os_.purge_user(who.tenant, user_id, actor=who.actor)}


@router.get("/{user_id}/graph")
def user_graph(
    user_id: UserIdPath, os_: MemoryOSDep, who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None,
) -> dict[str, Any]:
    return os_.graph_view(who.tenant, user_id, limit=limit, cursor=cursor)
