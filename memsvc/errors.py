"""Exceptions raised by memsvc.

Every error the engine raises derives from ``MemsvcError`` and carries the HTTP
``status`` and a stable machine-readable ``code``; one handler in ``api/`` renders
them as ``{"error": {"code", "message", "details"?}}``.

    MemsvcError                    500 internal
    ├── InvalidInput               422 invalid_input
    │   └── PayloadTooLarge        413 payload_too_large
    ├── Unauthenticated            401 unauthenticated
    ├── Forbidden                  403 forbidden
    ├── NotFound                   404 not_found
    ├── Conflict                   409 conflict
    │   └── ScopeChanged           409 scope_changed
    ├── RateLimited                429 rate_limited
    └── BackendUnavailable         503 backend_unavailable
        └── PurgeIncomplete        503 purge_incomplete
"""

from __future__ import annotations

from typing import Any


class MemsvcError(Exception):
    """Root of every memsvc error."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidInput(MemsvcError):
    status = 422
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    status = 413
    code = "payload_too_large"


class Unauthenticated(MemsvcError):
    status = 401
    code = "unauthenticated"


class Forbidden(MemsvcError):
    status = 403
    code = "forbidden"


class NotFound(MemsvcError):
    status = 404
    code = "not_found"


class Conflict(MemsvcError):
    status = 409
    code = "conflict"


class ScopeChanged(Conflict):
    """Another writer committed to the same user scope after this write read it (the write is
    planned again; raised to the client only when that keeps happening)."""

    code = "scope_changed"


class RateLimited(MemsvcError):
    """Too many requests or queued jobs; `retry_after` (seconds) becomes the `Retry-After` header."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, details: Any = None, retry_after: int = 1) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, retry_after)


class BackendUnavailable(MemsvcError):
    status = 503
    code = "backend_unavailable"


class PurgeIncomplete(BackendUnavailable):
    """A purge removed the SQL rows but a derived store failed; it is retried in the background."""

    code = "purge_incomplete"
