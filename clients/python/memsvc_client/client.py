"""`MemsvcClient` (sync) and `AsyncMemsvcClient`: thin transports over the shared calls in `_calls`.

Each method builds a `Call` (request + parser) and hands it to `_run`, the only place
that differs between the two: a blocking or an awaiting send with the same retry policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx

from memsvc_client import _calls as calls
from memsvc_client import models as m
from memsvc_client._base import _ClientConfig
from memsvc_client._calls import Call, RetryPolicy
from memsvc_client.errors import JobTimeout, TransportError

T = TypeVar("T")
MessageLike = m.Message | Mapping[str, Any] | str
OperationLike = m.Operation | Mapping[str, Any]


class Job:
    """A `wait=False` write accepted by the server; `result()` polls `GET /v1/jobs/{id}`."""

    def __init__(self, client: MemsvcClient, job_id: str) -> None:
        self.client, self.id = client, job_id

    def status(self) -> m.JobStatus:
        return self.client.job(self.id)

    def result(self, timeout: float = 120.0, poll_interval: float = 0.2) -> m.WriteResult:
        """Wait for the write; raises JobFailed when it failed, JobTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done = calls.job_outcome(self.status())
            if done is not None:
                return done
            if time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still running after {timeout} s")
            time.sleep(poll_interval)

    def __repr__(self) -> str:
        return f"Job({self.id!r})"


class AsyncJob:
    """The async twin of `Job`: `await job.result()`."""

    def __init__(self, client: AsyncMemsvcClient, job_id: str) -> None:
        self.client, self.id = client, job_id

    async def status(self) -> m.JobStatus:
        return await self.client.job(self.id)

    async def result(self, timeout: float = 120.0, poll_interval: float = 0.2) -> m.WriteResult:
        deadline = time.monotonic() + timeout
        while True:
            done = calls.job_outcome(await self.status())
            if done is not None:
                return done
            if time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still running after {timeout} s")
            await asyncio.sleep(poll_interval)

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"


class MemsvcClient:
    """Blocking client. `MemsvcClient(url, api_key)`; both default to `MEMSVC_URL` / `MEMSVC_API_KEY`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, retry: RetryPolicy | None = None,
                 headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.config = _ClientConfig(base_url, api_key, timeout, retry, headers)
        self._http = httpx.Client(transport=transport, **self.config.client_kwargs())

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                resp = self._http.request(call.method, call.path, params=call.params, json=call.json)
            except httpx.TransportError as exc:
                wait = self.config.retry.delay(attempt, call=call, exc=exc)
                if wait is None:
                    raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
            else:
                wait = self.config.retry.delay(attempt, call=call, response=resp)
                if wait is None:
                    return call.parse(resp)
            time.sleep(wait)
            attempt += 1

    # -- routes (bodies and parsing live in _calls) --------------------------------------
    @overload
    def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = ...,
            session_id: str | None = ..., metadata: Mapping[str, Any] | None = ..., infer: bool = ...,
            wait: Literal[True] = ..., operations: Sequence[OperationLike] | None = ...) -> m.WriteResult: ...

    @overload
    def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = ...,
            session_id: str | None = ..., metadata: Mapping[str, Any] | None = ..., infer: bool = ...,
            wait: Literal[False], operations: Sequence[OperationLike] | None = ...) -> Job: ...

    def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = None,
            session_id: str | None = None, metadata: Mapping[str, Any] | None = None, infer: bool = True,
            wait: bool = True, operations: Sequence[OperationLike] | None = None) -> m.WriteResult | Job:
        """Write messages (`POST /v1/memories`); `wait=False` returns a `Job` at once. `operations`
        are the agent's own inserts, updates and deletes (Memory-as-Action)."""
        req = calls.write_request(user_id, messages, agent_id=agent_id, session_id=session_id,
                                  metadata=metadata, infer=infer, wait=wait, operations=operations)
        out = self._run(calls.add(req))
        return Job(self, out) if isinstance(out, str) else out

    def job(self, job_id: str) -> m.JobStatus:
        return self._run(calls.job(job_id))

    def search(self, user_id: str, query: str, *, top_k: int = 10, token_budget: int | None = None,
               types: Sequence[m.MemoryType] | None = None, as_of: datetime | None = None,
               time_range: m.TimeRange | Mapping[str, Any] | None = None,
               filters: m.SearchFilters | Mapping[str, Any] | None = None, explain: bool = False,
               preset: str | None = None, include_archived: bool = False) -> m.SearchResult:
        """Recall (`POST /v1/memories/search`), results in reading order, `rank` 1 = best."""
        return self._run(calls.search(calls.search_request(
            user_id, query, top_k=top_k, token_budget=token_budget, types=types, as_of=as_of,
            time_range=time_range, filters=filters, explain=explain, preset=preset,
            include_archived=include_archived)))

    def list_memories(self, user_id: str | None = None, *, types: Sequence[m.MemoryType] | None = None,
             statuses: Sequence[m.MemoryStatus] | None = None, q: str | None = None, limit: int = 50,
             cursor: str | None = None) -> m.MemoryPage:
        """One page of `GET /v1/memories`; pass `next_cursor` back as `cursor`."""
        return self._run(calls.list_memories(user_id, types=types, statuses=statuses, q=q, limit=limit, cursor=cursor))

    def iter_memories(self, user_id: str | None = None, *, types: Sequence[m.MemoryType] | None = None,
                      statuses: Sequence[m.MemoryStatus] | None = None, q: str | None = None,
                      page_size: int = 200) -> Iterator[m.Memory]:
        """Every matching memory, following the cursor."""
        cursor: str | None = None
        while True:
            page = self.list_memories(user_id, types=types, statuses=statuses, q=q, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get(self, memory_id: str) -> m.Memory:
        return self._run(calls.get(memory_id))

    def update(self, memory_id: str, *, content: str | None = None, type: m.MemoryType | None = None,
               importance: float | None = None, metadata: dict[str, Any] | None = None,
               event_time: datetime | None = None, valid_from: datetime | None = None,
               valid_to: datetime | None = None, status: m.MemoryStatus | None = None) -> m.Memory:
        """Correct a memory (`PATCH`); the old version stays in its history."""
        return self._run(calls.update(memory_id, calls.patch_request(
            content=content, type=type, importance=importance, metadata=metadata, event_time=event_time,
            valid_from=valid_from, valid_to=valid_to, status=status)))

    def delete(self, memory_id: str) -> m.Memory:
        return self._run(calls.delete(memory_id))

    def history(self, memory_id: str) -> m.History:
        return self._run(calls.history(memory_id))

    def purge_user(self, user_id: str) -> m.PurgeResult:
        """`DELETE /v1/users/{id}`: everything about the user, everywhere."""
        return self._run(calls.purge_user(user_id))

    def graph(self, user_id: str, *, limit: int = 100, cursor: str | None = None) -> m.Graph:
        return self._run(calls.graph(user_id, limit=limit, cursor=cursor))

    def feedback(self, user_id: str, query: str, used_memory_ids: Sequence[str], *,
                 helpful: bool | None = None) -> m.FeedbackResult:
        return self._run(calls.feedback(m.FeedbackRequest(
            user_id=user_id, query=query, used_memory_ids=list(used_memory_ids), helpful=helpful)))

    def skills(self) -> list[dict[str, Any]]:
        return self._run(calls.skills())

    def policies(self) -> dict[str, Any]:
        return self._run(calls.policies())

    def healthz(self) -> dict[str, Any]:
        return self._run(calls.healthz())

    def readyz(self) -> dict[str, Any]:
        return self._run(calls.readyz())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemsvcClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncMemsvcClient:
    """Awaiting client with the same methods as `MemsvcClient`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, retry: RetryPolicy | None = None,
                 headers: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = _ClientConfig(base_url, api_key, timeout, retry, headers)
        self._http = httpx.AsyncClient(transport=transport, **self.config.client_kwargs())

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(call.method, call.path, params=call.params, json=call.json)
            except httpx.TransportError as exc:
                wait = self.config.retry.delay(attempt, call=call, exc=exc)
                if wait is None:
                    raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
            else:
                wait = self.config.retry.delay(attempt, call=call, response=resp)
                if wait is None:
                    return call.parse(resp)
            await asyncio.sleep(wait)
            attempt += 1

    @overload
    async def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = ...,
                  session_id: str | None = ..., metadata: Mapping[str, Any] | None = ..., infer: bool = ...,
                  wait: Literal[True] = ..., operations: Sequence[OperationLike] | None = ...) -> m.WriteResult: ...

    @overload
    async def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = ...,
                  session_id: str | None = ..., metadata: Mapping[str, Any] | None = ..., infer: bool = ...,
                  wait: Literal[False], operations: Sequence[OperationLike] | None = ...) -> AsyncJob: ...

    async def add(self, user_id: str, messages: Sequence[MessageLike], *, agent_id: str | None = None,
                  session_id: str | None = None, metadata: Mapping[str, Any] | None = None, infer: bool = True,
                  wait: bool = True, operations: Sequence[OperationLike] | None = None) -> m.WriteResult | AsyncJob:
        req = calls.write_request(user_id, messages, agent_id=agent_id, session_id=session_id,
                                  metadata=metadata, infer=infer, wait=wait, operations=operations)
        out = await self._run(calls.add(req))
        return AsyncJob(self, out) if isinstance(out, str) else out

    async def job(self, job_id: str) -> m.JobStatus:
        return await self._run(calls.job(job_id))

    async def search(self, user_id: str, query: str, *, top_k: int = 10, token_budget: int | None = None,
                     types: Sequence[m.MemoryType] | None = None, as_of: datetime | None = None,
                     time_range: m.TimeRange | Mapping[str, Any] | None = None,
                     filters: m.SearchFilters | Mapping[str, Any] | None = None, explain: bool = False,
                     preset: str | None = None, include_archived: bool = False) -> m.SearchResult:
        return await self._run(calls.search(calls.search_request(
            user_id, query, top_k=top_k, token_budget=token_budget, types=types, as_of=as_of,
            time_range=time_range, filters=filters, explain=explain, preset=preset,
            include_archived=include_archived)))

    async def list_memories(self, user_id: str | None = None, *, types: Sequence[m.MemoryType] | None = None,
                   statuses: Sequence[m.MemoryStatus] | None = None, q: str | None = None, limit: int = 50,
                   cursor: str | None = None) -> m.MemoryPage:
        return await self._run(calls.list_memories(user_id, types=types, statuses=statuses, q=q, limit=limit,
                                                   cursor=cursor))

    async def iter_memories(self, user_id: str | None = None, *, types: Sequence[m.MemoryType] | None = None,
                            statuses: Sequence[m.MemoryStatus] | None = None, q: str | None = None,
                            page_size: int = 200) -> AsyncIterator[m.Memory]:
        cursor: str | None = None
        while True:
            page = await self.list_memories(user_id, types=types, statuses=statuses, q=q, limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def get(self, memory_id: str) -> m.Memory:
        return await self._run(calls.get(memory_id))

    async def update(self, memory_id: str, *, content: str | None = None, type: m.MemoryType | None = None,
                     importance: float | None = None, metadata: dict[str, Any] | None = None,
                     event_time: datetime | None = None, valid_from: datetime | None = None,
                     valid_to: datetime | None = None, status: m.MemoryStatus | None = None) -> m.Memory:
        return await self._run(calls.update(memory_id, calls.patch_request(
            content=content, type=type, importance=importance, metadata=metadata, event_time=event_time,
            valid_from=valid_from, valid_to=valid_to, status=status)))

    async def delete(self, memory_id: str) -> m.Memory:
        return await self._run(calls.delete(memory_id))

    async def history(self, memory_id: str) -> m.History:
        return await self._run(calls.history(memory_id))

    async def purge_user(self, user_id: str) -> m.PurgeResult:
        return await self._run(calls.purge_user(user_id))

    async def graph(self, user_id: str, *, limit: int = 100, cursor: str | None = None) -> m.Graph:
        return await self._run(calls.graph(user_id, limit=limit, cursor=cursor))

    async def feedback(self, user_id: str, query: str, used_memory_ids: Sequence[str], *,
                       helpful: bool | None = None) -> m.FeedbackResult:
        return await self._run(calls.feedback(m.FeedbackRequest(
            user_id=user_id, query=query, used_memory_ids=list(used_memory_ids), helpful=helpful)))

    async def skills(self) -> list[dict[str, Any]]:
        return await self._run(calls.skills())

    async def policies(self) -> dict[str, Any]:
        return await self._run(calls.policies())

    async def healthz(self) -> dict[str, Any]:
        return await self._run(calls.healthz())

    async def readyz(self) -> dict[str, Any]:
        return await self._run(calls.readyz())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemsvcClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()
