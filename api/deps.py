"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Principal, authenticate
from memsvc.errors import Forbidden, Unauthenticated
from memsvc.memory_os import MemoryOS


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
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_writer(principal: PrincipalDep) -> Principal:
    if principal.read_only:
        raise Forbidden("this API key is read-only")
    return principal


WriterDep = Annotated[Principal, Depends(get_writer)]
