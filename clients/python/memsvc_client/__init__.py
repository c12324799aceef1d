"""memsvc-client: typed sync and async clients for memsvc's REST API v1.

LangChain / LangGraph integrations live in `memsvc_client.langchain` and
`memsvc_client.langgraph` (extra `memsvc-client[langchain]`).
"""

from memsvc_client._calls import RetryPolicy
from memsvc_client.client import AsyncJob, AsyncMemsvcClient, Job, MemsvcClient
from memsvc_client.errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    JobFailed,
    JobTimeout,
    MemsvcClientError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    TransportError,
    Unauthenticated,
)
from memsvc_client.models import (
    FeedbackResult,
    Graph,
    History,
    JobStatus,
    Memory,
    MemoryPage,
    Message,
    Operation,
    PurgeResult,
    SearchHit,
    SearchResult,
    WriteResult,
)

__all__ = [
    "APIError",
    "AsyncJob",
    "AsyncMemsvcClient",
    "BadRequest",
    "Conflict",
    "FeedbackResult",
    "Forbidden",
    "Graph",
    "History",
    "InvalidInput",
    "Job",
    "JobFailed",
    "JobStatus",
    "JobTimeout",
    "Memory",
    "MemoryPage",
    "MemsvcClient",
    "MemsvcClientError",
    "Message",
    "NotFound",
    "Operation",
    "PayloadTooLarge",
    "PurgeResult",
    "RateLimited",
    "RetryPolicy",
    "SearchHit",
    "SearchResult",
    "ServerError",
    "TransportError",
    "Unauthenticated",
    "WriteResult",
]
__version__ = "0.1.0"
