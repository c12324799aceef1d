"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from api.auth import Principal, authenticate
from memsvc.errors import Forbidden, InvalidInput, RateLimited, Unauthenticated
from memsvc.memory_os import MemoryOS
from memsvc.schemas import ID_MAX, ID_PATTERN


def reject_nul(request: Request) -> None:
    """No NUL in any path or query parameter (bodies are checked by their schemas)."""
    bad = [k for k, v in request.path_params.items() if "\x00" in str(v)]
    bad += [k for k, v in request.query_params.multi_items() if "\x00" in k or "\x00" in v]
    if bad:
        raise InvalidInput("NUL characters are not allowed", details={"params": sorted(set(bad))})


# A user id in a path or a query follows the rule of the bodies (memsvc.schemas.ID_PATTERN).
UserIdPath = Annotated[str, Path(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]
UserIdQuery = Annotated[str | None, Query(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]


def get_memory_os(request: Request) -> MemoryOS:
    os_: MemoryOS = request.app.state.memory_os
    return os_


MemoryOSDep = Annotated[MemoryOS, Depends(get_memory_os)]


def get_principal(request: Request, os_: MemoryOSDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer API key (Authorization: Bearer <key>)")
    principal = authenticate(os_.records, token.strip())
    if principal is None:
        raise Unauthenticated("invalid API key")
    limits = getattr(request.app.state, "rate_limits", None)  # set by create_app
    wait = limits.take(principal.key_id) if limits is not None else None
    if wait is not None:
        raise RateLimited("too many requests for this API key", retry_after=wait)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_writer(principal: PrincipalDep) -> Principal:
    if principal.read_only:
        raise Forbidden("this API key is read-only")
    return principal


WriterDep = Annotated[Principal, Depends(get_writer)]
