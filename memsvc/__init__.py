"""memsvc: long-term memory for AI agents (the engine; no backend, HTTP or eval code here)."""

from memsvc.config import Settings
from memsvc.errors import (
    BackendUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    MemsvcError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryCube, MemoryStatus, MemoryType, MemoryVersion, Role, StoredMessage
from memsvc.schemas import (
    FeedbackRequest,
    MemoryPatch,
    MessageIn,
    SearchFilters,
    SearchRequest,
    SearchResult,
    TimeRange,
    WriteRequest,
    WriteResult,
)

__all__ = [
    "BackendUnavailable",
    "Conflict",
    "FeedbackRequest",
    "Forbidden",
    "InvalidInput",
    "MemoryCube",
    "MemoryOS",
    "MemoryPatch",
    "MemoryStatus",
    "MemoryType",
    "MemoryVersion",
    "MemsvcError",
    "MessageIn",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Role",
    "SearchFilters",
    "SearchRequest",
    "SearchResult",
    "Settings",
    "StoredMessage",
    "TimeRange",
    "Unauthenticated",
    "WriteRequest",
    "WriteResult",
]
