"""Transport-free half of the clients: every route as a `Call` (request + parser), and the retry policy.

The sync and async clients only send a `Call` and feed the answer back to `Call.parse`;
everything else (bodies, query strings, which calls are retry-safe, parsing) lives here once.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from memsvc_client import models as m
from memsvc_client.errors import error_for

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    # Safe to send again when the first attempt may or may not have reached the server.
    idempotent: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and jitter.

    429 and 503 are retried for every call (the server refused the request, which
    changed nothing), honouring `Retry-After`; connection failures only for idempotent
    calls, since a request that was sent may have been applied.
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))

    def delay(self, attempt: int, *, call: Call[Any], response: httpx.Response | None = None,
              exc: Exception | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to stop (pure: no I/O)."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in self.retry_statuses:
                return None
            after = retry_after(response.headers.get("retry-after"))
            if after is not None:
                return min(after, self.max_backoff * 4)
        # ConnectError: nothing was sent, so even a non-idempotent call is safe to resend.
        elif exc is not None and not (call.idempotent or isinstance(exc, httpx.ConnectError)):
            return None
        base: float = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)


def retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- parsing ------------------------------------------------------------------------------
def _checked(resp: httpx.Response, ok: Sequence[int] = (200,)) -> Any:
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    if resp.status_code not in ok:
        raise error_for(resp.status_code, body)
    return body


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda resp: cls.model_validate(_checked(resp))


def _json(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = _checked(resp)
    return body


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _seg(value: str) -> str:
    return quote(value, safe="")


# -- the routes ---------------------------------------------------------------------------
def add(req: m.WriteRequest) -> Call[m.WriteResult | str]:
    """POST /v1/memories: a WriteResult, or with `wait=False` the job id (202)."""

    def parse(resp: httpx.Response) -> m.WriteResult | str:
        body = _checked(resp, ok=(200, 202))
        if resp.status_code == 202:
            return str(body["job_id"])
        return m.WriteResult.model_validate(body)

    # The server deduplicates by message id, so a write whose messages all carry ids may be resent.
    idempotent = all(msg.id is not None for msg in req.messages) and not req.operations
    return Call("POST", "/v1/memories", parse, json=_body(req), idempotent=idempotent)


def job(job_id: str) -> Call[m.JobStatus]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}", _model(m.JobStatus))


def search(req: m.SearchRequest) -> Call[m.SearchResult]:
    return Call("POST", "/v1/memories/search", _model(m.SearchResult), json=_body(req))


def list_memories(user_id: str | None = None, *, types: Sequence[str] | None = None,
                  statuses: Sequence[str] | None = None, q: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> Call[m.MemoryPage]:
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("user_id", user_id), ("q", q), ("cursor", cursor)):
        if value is not None:
            params[key] = value
    if types:
        params["type"] = list(types)
    if statuses:
        params["status"] = list(statuses)
    return Call("GET", "/v1/memories", _model(m.MemoryPage), params=params)


def get(memory_id: str) -> Call[m.Memory]:
    return Call("GET", f"/v1/memories/{_seg(memory_id)}", _model(m.Memory))


def update(memory_id: str, patch: m.MemoryPatch) -> Call[m.Memory]:
    return Call("PATCH", f"/v1/memories/{_seg(memory_id)}", _model(m.Memory), json=_body(patch), idempotent=False)


def delete(memory_id: str) -> Call[m.Memory]:
    return Call("DELETE", f"/v1/memories/{_seg(memory_id)}", _model(m.Memory))


def history(memory_id: str) -> Call[m.History]:
    return Call("GET", f"/v1/memories/{_seg(memory_id)}/history", _model(m.History))


def purge_user(user_id: str) -> Call[m.PurgeResult]:
    return Call("DELETE", f"/v1/users/{_seg(user_id)}", _model(m.PurgeResult))


def graph(user_id: str, *, limit: int = 100, cursor: str | None = None) -> Call[m.Graph]:
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", f"/v1/users/{_seg(user_id)}/graph", _model(m.Graph), params=params)


def feedback(req: m.FeedbackRequest) -> Call[m.FeedbackResult]:
    return Call("POST", "/v1/feedback", _model(m.FeedbackResult), json=_body(req), idempotent=False)


def skills() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/skills", lambda resp: list(_json(resp)["skills"]))


def policies() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/policies", _json)


def healthz() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", _json)


def readyz() -> Call[dict[str, Any]]:
    """GET /readyz; a not-ready server (503) raises ServerError once retries are spent."""
    return Call("GET", "/readyz", _json)


# -- request models from keyword arguments (shared by both clients) -----------------------
def write_request(user_id: str, messages: Sequence[m.Message | Mapping[str, Any] | str], *,
                  agent_id: str | None, session_id: str | None, metadata: Mapping[str, Any] | None,
                  infer: bool, wait: bool,
                  operations: Sequence[m.Operation | Mapping[str, Any]] | None = None) -> m.WriteRequest:
    """Plain strings become user messages."""
    msgs = [msg if isinstance(msg, m.Message)
            else m.Message(role="user", content=msg) if isinstance(msg, str)
            else m.Message.model_validate(msg) for msg in messages]
    ops = None if operations is None else [
        o if isinstance(o, m.Operation) else m.Operation.model_validate(o) for o in operations]
    return m.WriteRequest(user_id=user_id, agent_id=agent_id, session_id=session_id, messages=msgs,
                          metadata=dict(metadata or {}), infer=infer, wait=wait, operations=ops)


def search_request(user_id: str, query: str, *, top_k: int, token_budget: int | None,
                   types: Sequence[str] | None, as_of: datetime | None,
                   time_range: m.TimeRange | Mapping[str, Any] | None,
                   filters: m.SearchFilters | Mapping[str, Any] | None, explain: bool,
                   preset: str | None, include_archived: bool = False) -> m.SearchRequest:
    return m.SearchRequest.model_validate({
        "user_id": user_id, "query": query, "top_k": top_k, "token_budget": token_budget,
        "types": list(types) if types is not None else None, "as_of": as_of,
        "time_range": time_range, "filters": filters, "explain": explain, "preset": preset,
        "include_archived": include_archived,
    })


def patch_request(**fields: Any) -> m.MemoryPatch:
    return m.MemoryPatch.model_validate({k: v for k, v in fields.items() if v is not None})


def job_outcome(status: m.JobStatus) -> m.WriteResult | None:
    """The job's WriteResult when done, None while it runs; raises JobFailed when it failed."""
    from memsvc_client.errors import JobFailed

    if status.state == "done":
        return m.WriteResult.model_validate(status.result or {"written": [], "skipped": []})
    if status.state == "failed":
        err = status.error or {}
        raise JobFailed(200, str(err.get("code", "job_failed")), str(err.get("message", "")), err.get("details"))
    return None
