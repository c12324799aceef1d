"""Typed bodies of memsvc's REST contract v1.

Request models mirror the server's schemas field for field (`tests/clients/test_models.py`
compares them with the server's OpenAPI, so drift fails CI). Response models accept fields
they do not know yet (`extra="allow"`), so an older client keeps working against a newer server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MemoryType = Literal["episodic", "semantic", "procedural", "refined"]
MemoryStatus = Literal["active", "superseded", "archived", "deleted"]
Role = Literal["user", "assistant", "system", "tool"]
JobState = Literal["pending", "running", "done", "failed"]
Scalar = str | int | float | bool


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- requests ---------------------------------------------------------------------------
class Message(_Request):
    """One message to remember; `id` makes the write idempotent (and retry-safe)."""

    id: str | None = None
    role: Role
    name: str | None = None
    content: str
    timestamp: datetime | None = None


class Operation(_Request):
    """An agent's own memory operation (Memory-as-Action): insert a reflection or a procedure,
    update or delete a memory by id, always with a reason."""

    op: Literal["insert", "update", "delete"]
    reason: str
    type: Literal["semantic", "procedural", "refined"] | None = None
    content: str | None = None
    memory_id: str | None = None
    source_ids: list[str] = Field(default_factory=list)
    importance: float | None = None
    metadata: dict[str, Any] | None = None


class WriteRequest(_Request):
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    messages: list[Message]  # at least one, unless `operations` are given
    metadata: dict[str, Any] = Field(default_factory=dict)
    infer: bool = True
    wait: bool = True
    operations: list[Operation] | None = None


class TimeRange(_Request):
    start: datetime | None = None
    end: datetime | None = None


class SearchFilters(_Request):
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Scalar] | None = None
    entities: list[str] | None = None


class SearchRequest(_Request):
    user_id: str
    query: str
    top_k: int = 10
    token_budget: int | None = None
    types: list[MemoryType] | None = None
    as_of: datetime | None = None
    time_range: TimeRange | None = None
    filters: SearchFilters | None = None
    explain: bool = False
    preset: str | None = None
    include_archived: bool = False


class MemoryPatch(_Request):
    content: str | None = None
    type: MemoryType | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    status: MemoryStatus | None = None


class FeedbackRequest(_Request):
    user_id: str
    query: str
    used_memory_ids: list[str]
    helpful: bool | None = None


# -- responses --------------------------------------------------------------------------
class Memory(_Response):
    """The contract's `Memory`: `source_ids` says which messages it came from."""

    id: str
    type: MemoryType
    content: str
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    source_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    importance: float
    version: int
    status: MemoryStatus
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchHit(Memory):
    """A recalled memory; `rank` 1 is the best, the list itself is in reading order."""

    score: float
    rank: int
    why: dict[str, Any] | None = None


class Skipped(_Response):
    message_id: str
    reason: str


class WriteResult(_Response):
    written: list[Memory]
    skipped: list[Skipped]
    changed: list[Memory] | None = None  # present when the request carried operations


class SearchResult(_Response):
    results: list[SearchHit]
    context: str


class ErrorDetail(_Response):
    code: str
    message: str
    details: Any | None = None


class ErrorBody(_Response):
    """The server's one error shape; `MemsvcClient` raises it as an `APIError`."""

    error: ErrorDetail


class MemoryPage(_Response):
    items: list[Memory]
    next_cursor: str | None = None


class JobStatus(_Response):
    id: str
    state: JobState
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class MemoryVersion(_Response):
    version: int
    change: str
    actor: str | None = None
    changed_at: datetime
    memory: dict[str, Any]


class History(_Response):
    memory_id: str
    versions: list[MemoryVersion]


class PurgeResult(_Response):
    user_id: str
    deleted: dict[str, int]


class Graph(_Response):
    entities: list[dict[str, Any]]
    relations: list[dict[str, Any]]
    next_cursor: str | None = None


class FeedbackResult(_Response):
    recorded: bool
    memory_ids: list[str]
