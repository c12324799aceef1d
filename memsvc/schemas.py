"""Request and response bodies of the REST contract v1; `MemoryOS` takes the same objects."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from memsvc.models import RESERVED_PREFIX, MemoryStatus, MemoryType, Role, as_utc

Scalar = str | int | float | bool

ID_PATTERN = r"^[^\s/\x00]+$"
"""User ids (bodies and paths): 1..256 characters, no whitespace, no `/`, no NUL."""
ID_MAX = 256
MAX_JSON_DEPTH = 8
"""Nesting levels allowed in client JSON values such as metadata (`{"a": {"b": 1}}` is 2)."""
INT64 = (-(2**63), 2**63 - 1)


def _utc_representable(value: datetime) -> datetime:
    """Datetimes must convert to UTC within years 1..9999 (every store and comparison uses UTC)."""
    try:
        as_utc(value)
    except OverflowError:
        raise ValueError("datetime out of range once converted to UTC (years 1..9999)") from None
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc_representable)]


def _check_json(value: Any, depth: int, loc: str) -> None:
    """NUL-free strings, int64 integers, finite floats and at most MAX_JSON_DEPTH levels of nesting."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{loc}: NUL characters are not allowed")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"{loc}: integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{loc}: numbers must be finite")
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"{loc}: nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(k, str):
                _check_json(k, depth, loc)
            _check_json(v, depth + 1, loc)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _safe_values(cls, value: Any, info: ValidationInfo) -> Any:
        # Nested bodies (messages, filters) are _Body models and check themselves.
        _check_json(value, 0, str(info.field_name))
        return value


def _id_field(description: str) -> Any:
    return Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN, description=description)


def _client_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    reserved = sorted(k for k in value or {} if k.startswith(RESERVED_PREFIX))
    if reserved:
        raise ValueError(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved for the server: {reserved}")
    return value


ClientMetadata = Annotated[dict[str, Any], AfterValidator(_client_metadata)]


class MessageIn(_Body):
    id: str | None = Field(None, min_length=1, max_length=256, description="message id; idempotency key within the user scope")
    role: Role
    name: str | None = Field(None, max_length=256)
    content: str = Field(min_length=1)
    timestamp: Timestamp | None = None


class OperationIn(_Body):
    """An agent's own memory operation (Memory-as-Action): insert a reflection or a procedure,
    update or delete a memory by id, always with a reason. It goes through the same resolution
    (an insert repeating a known memory is declined) and history as derived memories."""

    op: Literal["insert", "update", "delete"]
    reason: str = Field(min_length=1, max_length=2000, description="why; kept in the memory's `_reason` metadata")
    type: Literal["semantic", "procedural", "refined"] | None = Field(None, description="insert: required")
    content: str | None = Field(None, min_length=1, description="insert and update: the memory's text")
    memory_id: str | None = Field(None, min_length=1, max_length=256, description="update and delete: the memory")
    source_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=100, description="message ids it restates (this request's or stored ones)")
    importance: float | None = Field(None, ge=0.0, le=1.0)
    metadata: ClientMetadata | None = None

    @model_validator(mode="after")
    def _fields_of_op(self) -> OperationIn:
        if self.op == "insert" and (self.type is None or self.content is None or self.memory_id is not None):
            raise ValueError("insert needs type and content, and no memory_id")
        if self.op == "update" and (self.memory_id is None or self.content is None):
            raise ValueError("update needs memory_id and content")
        if self.op == "delete" and (self.memory_id is None or self.content is not None or self.type is not None):
            raise ValueError("delete needs memory_id only")
        return self


class WriteRequest(_Body):
    user_id: str = _id_field("the user whose memory this is")
    agent_id: str | None = Field(None, min_length=1, max_length=256)
    session_id: str | None = Field(None, min_length=1, max_length=256)
    messages: list[MessageIn] = Field(description="at least one, unless `operations` are given")
    metadata: ClientMetadata = Field(default_factory=dict, description="client keys; `_`-prefixed keys are reserved")
    infer: bool = True
    wait: bool = True
    operations: list[OperationIn] | None = Field(
        None, max_length=100, description="optional: the agent's own inserts, updates and deletes (Memory-as-Action)")

    @field_validator("messages")
    @classmethod
    def _unique_ids(cls, messages: list[MessageIn]) -> list[MessageIn]:
        ids = [m.id for m in messages if m.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("message ids must be unique within a request")
        return messages

    @model_validator(mode="after")
    def _something_to_write(self) -> WriteRequest:
        if not self.messages and not self.operations:
            raise ValueError("messages needs at least one message (or give operations)")
        return self


class Skipped(BaseModel):
    message_id: str
    reason: str


class WriteResult(BaseModel):
    written: list[dict[str, Any]]
    skipped: list[Skipped]
    changed: list[dict[str, Any]] | None = Field(
        None, description="present when the request carried operations: the memories they updated or deleted")


class TimeRange(_Body):
    start: Timestamp | None = None
    end: Timestamp | None = None


class SearchFilters(_Body):
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Scalar] | None = None
    entities: list[str] | None = Field(None, description="only memories that mention one of these entities")


class SearchRequest(_Body):
    user_id: str = _id_field("the user whose memory to search")
    query: str = Field(min_length=1)
    top_k: int = Field(10, ge=1, description="at most `MEMSVC_LIMITS__MAX_TOP_K` (default 200)")
    token_budget: int | None = Field(None, ge=1)
    types: list[MemoryType] | None = None
    as_of: Timestamp | None = None
    time_range: TimeRange | None = None
    filters: SearchFilters | None = None
    explain: bool = False
    preset: str | None = Field(None, description="retrieval recipe; default `hybrid_temporal` (`MEMSVC_SEARCH__PRESET`)")
    include_archived: bool = Field(False, description="also search memories the retention sweep (or a PATCH) archived")


class SearchResult(BaseModel):
    results: list[dict[str, Any]]
    context: str


class MemoryPatch(_Body):
    """Fields to change; an absent field is left alone. Only the times may be set to null."""

    content: str | None = Field(None, min_length=1)
    type: MemoryType | None = None
    importance: float | None = Field(None, ge=0.0, le=1.0)
    metadata: ClientMetadata | None = Field(None, description="replaces the client keys; server (`_`) keys stay")
    event_time: Timestamp | None = None
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None
    status: MemoryStatus | None = Field(None, description="active or archived (restore / archive)")

    @model_validator(mode="after")
    def _no_null_for_required_fields(self) -> MemoryPatch:
        nulls = sorted(f for f in self.model_fields_set & NOT_NULLABLE if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"these fields cannot be null: {nulls}")
        return self


NOT_NULLABLE = frozenset({"content", "type", "importance", "metadata", "status"})


class FeedbackRequest(_Body):
    user_id: str = _id_field("the user the recall was for")
    query: str = Field(min_length=1)
    used_memory_ids: list[str]
    helpful: bool | None = None
