"""Request and response bodies of the REST contract v1; `MemoryOS` takes the same objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memsvc.models import MemoryStatus, MemoryType, Role

Scalar = str | int | float | bool


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _id_field(description: str) -> Any:
    return Field(min_length=1, max_length=256, pattern=r"^[^\s/]+$", description=description)


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


class MessageIn(_Body):
    id: str | None = Field(None, min_length=1, max_length=256, description="message id; idempotency key within the user scope")
    role: Role
    name: str | None = Field(None, max_length=256)
    content: str = Field(min_length=1)
    timestamp: datetime | None = None

    _clean = field_validator("id", "name", "content")(_no_nul)


class WriteRequest(_Body):
    user_id: str = _id_field("the user whose memory this is")
    agent_id: str | None = Field(None, min_length=1, max_length=256)
    session_id: str | None = Field(None, min_length=1, max_length=256)
    messages: list[MessageIn] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    infer: bool = True
    wait: bool = True

    @field_validator("messages")
    @classmethod
    def _unique_ids(cls, messages: list[MessageIn]) -> list[MessageIn]:
        ids = [m.id for m in messages if m.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("message ids must be unique within a request")
        return messages


class Skipped(BaseModel):
    message_id: str
    reason: str


class WriteResult(BaseModel):
    written: list[dict[str, Any]]
    skipped: list[Skipped]


class TimeRange(_Body):
    start: datetime | None = None
    end: datetime | None = None


class SearchFilters(_Body):
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Scalar] | None = None
    entities: list[str] | None = Field(None, description="only memories that mention one of these entities")


class SearchRequest(_Body):
    user_id: str = _id_field("the user whose memory to search")
    query: str = Field(min_length=1)
    top_k: int = Field(10, ge=1, le=200)
    token_budget: int | None = Field(None, ge=1)
    types: list[MemoryType] | None = None
    as_of: datetime | None = None
    time_range: TimeRange | None = None
    filters: SearchFilters | None = None
    explain: bool = False
    preset: str | None = Field(None, description="retrieval recipe; default `hybrid`")


class SearchResult(BaseModel):
    results: list[dict[str, Any]]
    context: str


class MemoryPatch(_Body):
    content: str | None = Field(None, min_length=1)
    type: MemoryType | None = None
    importance: float | None = Field(None, ge=0.0, le=1.0)
    metadata: dict[str, Any] | None = None
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    status: MemoryStatus | None = Field(None, description="active or archived (restore / archive)")

    _clean = field_validator("content")(_no_nul)


class FeedbackRequest(_Body):
    user_id: str = _id_field("the user the recall was for")
    query: str = Field(min_length=1)
    used_memory_ids: list[str]
    helpful: bool | None = None
