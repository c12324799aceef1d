"""Exceptions of the client.

    MemsvcClientError
    ├── TransportError        the server could not be reached (after the retries allowed)
    ├── JobTimeout            a job did not finish within `Job.result(timeout=...)`
    └── APIError              the server answered {"error": {"code", "message", "details"?}}
        ├── BadRequest            400
        ├── Unauthenticated       401
        ├── Forbidden             403 (e.g. a read-only key writing)
        ├── NotFound              404 (also: another tenant's memory)
        ├── Conflict              409
        ├── PayloadTooLarge       413
        ├── InvalidInput          422
        ├── RateLimited           429
        ├── ServerError           5xx
        └── JobFailed             a `wait=False` write failed in the background
"""

from __future__ import annotations

from typing import Any


class MemsvcClientError(Exception):
    """Root of every exception this package raises."""


class TransportError(MemsvcClientError):
    """No answer from the server (connection refused, reset, timed out)."""


class JobTimeout(MemsvcClientError):
    """A background job was still running when the caller stopped waiting."""


class APIError(MemsvcClientError):
    """An error answer; `code` is the server's machine-readable code (e.g. `not_found`)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class BadRequest(APIError): ...


class Unauthenticated(APIError): ...


class Forbidden(APIError): ...


class NotFound(APIError): ...


class Conflict(APIError): ...


class PayloadTooLarge(APIError): ...


class InvalidInput(APIError): ...


class RateLimited(APIError): ...


class ServerError(APIError): ...


class JobFailed(APIError): ...


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: InvalidInput, 429: RateLimited,
}


def error_for(status: int, body: Any) -> APIError:
    """The exception for an error answer; tolerates bodies that are not the server's shape (proxies)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and "code" in err:
        code, message, details = str(err["code"]), str(err.get("message", "")), err.get("details")
    else:
        code, message, details = f"http_{status}", str(body)[:500], None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(status, code, message, details)
