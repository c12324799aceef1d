"""MCP tools: the agent curates its own memory (remember, recall, get, update, forget, history, feedback).

One tool layer, two ways to reach memsvc, behind the small `MemoryBackend` protocol:

- `/mcp` on the API (streamable HTTP, stateless): `LocalBackend` calls `MemoryOS` in-process with
  the `Principal` of the request's bearer key — the same keys, tenant scoping and read-only rule as
  REST; every tool call authenticates again, so a key only ever reaches its own tenant.
- `memsvc mcp` (stdio, for desktop agents): `api.mcp_stdio.RestBackend` talks to a running memsvc
  over REST through `memsvc_client`.

Backends take and return the REST bodies (dicts), so the tools cannot tell them apart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field, ValidationError
from starlette.types import Receive, Scope, Send

from api.auth import Principal, authenticate
from api.errors import error_response
from memsvc.errors import Forbidden, InvalidInput, MemsvcError, Unauthenticated
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryStatus, MemoryType
from memsvc.ports import MemoryQuery
from memsvc.schemas import FeedbackRequest, MemoryPatch, SearchRequest, WriteRequest

PROFILE_TYPES: tuple[Literal["semantic", "refined"], ...] = ("semantic", "refined")
INSTRUCTIONS = (
    "Long-term memory for this user. Call `recall` before answering anything that may depend on "
    "the past (preferences, facts about the user, earlier decisions); call `remember` with what "
    "is worth keeping after a turn. Memories carry `source_ids` (the messages they came from) and "
    "times: cite them. Correct a wrong memory with `update`, drop one with `forget`."
)


class MemoryBackend(Protocol):
    """What the tools need; bodies and answers are those of REST v1."""

    async def remember(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def job(self, job_id: str) -> dict[str, Any]: ...
    async def recall(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def get(self, memory_id: str) -> dict[str, Any]: ...
    async def update(self, memory_id: str, patch: dict[str, Any]) -> dict[str, Any]: ...
    async def forget(self, memory_id: str) -> dict[str, Any]: ...
    async def history(self, memory_id: str) -> dict[str, Any]: ...
    async def feedback(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def profile(self, user_id: str) -> list[dict[str, Any]]: ...


BackendFor = Callable[[Context], Awaitable[MemoryBackend]]


def _valid(model: Any, body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput("invalid arguments", details=[
            {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]) from None


class LocalBackend:
    """In-process: `MemoryOS` with one principal's tenant; blocking calls run in worker threads."""

    def __init__(self, os_: MemoryOS, who: Principal) -> None:
        self.os, self.who = os_, who

    def _write(self) -> None:
        if self.who.read_only:
            raise Forbidden("this API key is read-only")

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn)

    async def remember(self, body: dict[str, Any]) -> dict[str, Any]:
        self._write()
        req = _valid(WriteRequest, body)
        if not req.wait:
            job = await self._run(lambda: self.os.submit(self.who.tenant, req, actor=self.who.actor))
            return {"job_id": job.id}
        res = await self._run(lambda: self.os.add(self.who.tenant, req, actor=self.who.actor))
        out: dict[str, Any] = res.model_dump(mode="json")
        return out

    async def job(self, job_id: str) -> dict[str, Any]:
        job = await self._run(lambda: self.os.job(self.who.tenant, job_id))
        return {"id": job.id, "state": job.state.value, "result": job.result, "error": job.error}

    async def recall(self, body: dict[str, Any]) -> dict[str, Any]:
        req = _valid(SearchRequest, body)
        res = await self._run(lambda: self.os.search(self.who.tenant, req, actor=self.who.actor))
        out: dict[str, Any] = res.model_dump(mode="json")
        return out

    async def get(self, memory_id: str) -> dict[str, Any]:
        cube = await self._run(lambda: self.os.get(self.who.tenant, memory_id))
        return dict(cube.public())

    async def update(self, memory_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._write()
        body = _valid(MemoryPatch, patch)
        cube = await self._run(lambda: self.os.update(self.who.tenant, memory_id, body, actor=self.who.actor))
        return dict(cube.public())

    async def forget(self, memory_id: str) -> dict[str, Any]:
        self._write()
        cube = await self._run(lambda: self.os.delete(self.who.tenant, memory_id, actor=self.who.actor))
        return dict(cube.public())

    async def history(self, memory_id: str) -> dict[str, Any]:
        versions = await self._run(lambda: self.os.history(self.who.tenant, memory_id))
        return {"memory_id": memory_id, "versions": [
            {"version": v.version, "change": v.change.value, "changed_at": v.changed_at.isoformat(),
             "content": v.snapshot.get("content"), "status": v.snapshot.get("status")} for v in versions]}

    async def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        self._write()
        req = _valid(FeedbackRequest, body)
        out: dict[str, Any] = await self._run(lambda: self.os.feedback(self.who.tenant, req, actor=self.who.actor))
        return out

    async def profile(self, user_id: str) -> list[dict[str, Any]]:
        query = MemoryQuery(user_id=user_id, types=[MemoryType(t) for t in PROFILE_TYPES],
                            statuses=[MemoryStatus.ACTIVE], limit=200)
        page = await self._run(lambda: self.os.list_memories(self.who.tenant, query))
        return [c.public() for c in page.items]


# -- the tools ------------------------------------------------------------------------------
def _lean(memory: dict[str, Any]) -> dict[str, Any]:
    """A memory as a model needs it: provenance and times kept, empty fields dropped."""
    keep = ("id", "type", "content", "source_ids", "event_time", "valid_from", "valid_to", "created_at",
            "agent_id", "session_id", "status", "version", "score", "rank", "metadata")
    return {k: memory[k] for k in keep if memory.get(k) not in (None, {}, [])}


def _fail(exc: Exception) -> ToolError:
    code = getattr(exc, "code", "error")
    message = getattr(exc, "message", str(exc))
    details = getattr(exc, "details", None)
    text = f"{code}: {message}" + (f" {json.dumps(details, default=str)}" if details else "")
    return ToolError(text)


UserId = Annotated[str, Field(description="the user whose memory this is (the same id on every call for one person)")]
MemoryId = Annotated[str, Field(description="a memory `id` as returned by recall or remember")]


def build_server(backend_for: BackendFor, *, expected: tuple[type[Exception], ...] = (MemsvcError,)) -> MCPServer:
    """The MCP server with memsvc's tools; `backend_for(ctx)` says where each call goes.

    `expected`: the exceptions that are answers (not found, forbidden, invalid …); the model
    reads them as tool errors `code: message`.
    """
    # The SDK calls logging.basicConfig at this level: WARNING keeps the app's logging as it was.
    server: MCPServer = MCPServer("memsvc", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING")
    errors: tuple[type[Exception], ...] = (*expected, MemsvcError)

    async def call(ctx: Context, op: Callable[[MemoryBackend], Any]) -> Any:
        try:
            return await op(await backend_for(ctx))
        except errors as exc:
            raise _fail(exc) from None

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def remember(
        ctx: Context,
        user_id: UserId,
        content: Annotated[str, Field(description="what to remember, in the words it was said (one message)")],
        role: Annotated[Literal["user", "assistant", "system", "tool"], Field(
            description="who said it: `user` for what the user told you, `assistant` for your own conclusions")] = "user",
        timestamp: Annotated[datetime | None, Field(
            description="when it was said or happened (ISO 8601); defaults to now")] = None,
        message_id: Annotated[str | None, Field(
            description="a stable id for this message; sending the same id again is a no-op")] = None,
        agent_id: Annotated[str | None, Field(description="your agent id, to keep agents' memories apart")] = None,
        session_id: Annotated[str | None, Field(description="the conversation id")] = None,
        infer: Annotated[bool, Field(
            description="true: also extract facts and preferences; false: keep only the message itself")] = True,
        wait: Annotated[bool, Field(
            description="false: return at once with a `job_id` (check it with job_status) instead of waiting")] = True,
    ) -> dict[str, Any]:
        """Store something worth keeping about the user (a fact, preference, decision, event).

        Returns the memories written (each with `id` and `source_ids`) and the messages skipped
        as duplicates; with wait=false, `{"job_id"}` at once.
        """
        message = {"role": role, "content": content, "timestamp": timestamp, "id": message_id}
        body = {"user_id": user_id, "agent_id": agent_id, "session_id": session_id, "infer": infer, "wait": wait,
                "messages": [{k: v for k, v in message.items() if v is not None}]}
        out: dict[str, Any] = await call(ctx, lambda b: b.remember({k: v for k, v in body.items() if v is not None}))
        if "job_id" in out:
            return {"job_id": out["job_id"], "state": "pending"}
        return {"written": [_lean(m) for m in out["written"]], "skipped": out["skipped"]}

    @server.tool(annotations=read_only)
    async def job_status(ctx: Context, job_id: Annotated[str, Field(description="the `job_id` remember returned")]
                         ) -> dict[str, Any]:
        """State of a remember call made with wait=false: pending, running, done (with what was written) or failed."""
        out: dict[str, Any] = await call(ctx, lambda b: b.job(job_id))
        result = out.get("result") or {}
        return {"job_id": out["id"], "state": out["state"], "error": out.get("error"),
                "written": [_lean(m) for m in result.get("written", [])]}

    @server.tool(annotations=read_only)
    async def recall(
        ctx: Context,
        user_id: UserId,
        query: Annotated[str, Field(description="what you need to know, as a question or keywords")],
        token_budget: Annotated[int, Field(ge=1, description="the most tokens of memory text to return")] = 800,
        top_k: Annotated[int, Field(ge=1, le=200, description="the most memories to return")] = 10,
        types: Annotated[list[Literal["episodic", "semantic", "procedural", "refined"]] | None, Field(
            description="only these kinds: episodic (what was said), semantic (facts), refined (preferences, "
                        "user facts), procedural (how-to)")] = None,
        as_of: Annotated[datetime | None, Field(description="what was true at this time (ISO 8601)")] = None,
        agent_id: Annotated[str | None, Field(description="only memories of this agent")] = None,
        session_id: Annotated[str | None, Field(description="only memories of this conversation")] = None,
    ) -> dict[str, Any]:
        """Search the user's long-term memory within a token budget.

        Returns `context` (the memories as text, ready to read) and `memories`, each with `id`,
        `content`, `source_ids` (the messages it came from), times (`event_time`, `valid_from`,
        `valid_to`) and `score`; `rank` 1 is the best match.
        """
        filters = {k: v for k, v in (("agent_id", agent_id), ("session_id", session_id)) if v is not None}
        body: dict[str, Any] = {"user_id": user_id, "query": query, "token_budget": token_budget, "top_k": top_k,
                                "types": types, "as_of": as_of, "filters": filters or None}
        out: dict[str, Any] = await call(ctx, lambda b: b.recall({k: v for k, v in body.items() if v is not None}))
        return {"context": out["context"], "memories": [_lean(m) for m in out["results"]]}

    @server.tool(annotations=read_only)
    async def get(ctx: Context, memory_id: MemoryId) -> dict[str, Any]:
        """Read one memory by id, with its provenance and validity times."""
        return _lean(await call(ctx, lambda b: b.get(memory_id)))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=False))
    async def update(
        ctx: Context,
        memory_id: MemoryId,
        content: Annotated[str | None, Field(description="the corrected text")] = None,
        importance: Annotated[float | None, Field(ge=0, le=1, description="0 (trivial) to 1 (essential)")] = None,
        valid_to: Annotated[datetime | None, Field(description="when it stopped being true (ISO 8601)")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="replace the memory's metadata")] = None,
    ) -> dict[str, Any]:
        """Correct a memory that is wrong or out of date; the old version stays in its history."""
        patch = {k: v for k, v in (("content", content), ("importance", importance), ("valid_to", valid_to),
                                   ("metadata", metadata)) if v is not None}
        if not patch:
            raise ToolError("invalid_input: give at least one of content, importance, valid_to, metadata")
        return _lean(await call(ctx, lambda b: b.update(memory_id, patch)))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                             open_world_hint=False))
    async def forget(ctx: Context, memory_id: MemoryId) -> dict[str, Any]:
        """Delete one memory (the user asked you to forget it, or it is plainly wrong). Recall no longer returns it."""
        out = await call(ctx, lambda b: b.forget(memory_id))
        return {"id": out["id"], "status": out["status"]}

    @server.tool(annotations=read_only)
    async def history(ctx: Context, memory_id: MemoryId) -> dict[str, Any]:
        """Every version of a memory, oldest first, with what changed it (create, update, supersede, delete)."""
        out: dict[str, Any] = await call(ctx, lambda b: b.history(memory_id))
        return out

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def feedback(
        ctx: Context,
        user_id: UserId,
        query: Annotated[str, Field(description="the query you recalled with")],
        used_memory_ids: Annotated[list[str], Field(description="ids of the recalled memories you actually used")],
        helpful: Annotated[bool | None, Field(description="did they help answer?")] = None,
    ) -> dict[str, Any]:
        """Say which recalled memories helped; memsvc learns what to recall from this."""
        body = {"user_id": user_id, "query": query, "used_memory_ids": used_memory_ids, "helpful": helpful}
        out: dict[str, Any] = await call(ctx, lambda b: b.feedback(body))
        return out

    @server.resource("memsvc://users/{user_id}/profile", mime_type="text/markdown",
                     description="What memsvc knows about a user: the active facts and preferences (semantic and "
                                 "refined memories), each with its id and source ids.")
    async def profile(user_id: str, ctx: Context) -> str:
        try:
            items = await (await backend_for(ctx)).profile(user_id)
        except errors as exc:
            raise ResourceError(str(_fail(exc))) from None
        lines = [f"# Profile of {user_id}", ""]
        for m in items:
            when = m.get("valid_from") or m.get("event_time") or m.get("created_at")
            lines.append(f"- {m['content']} ({m['type']}; id {m['id']}; sources {', '.join(m['source_ids']) or '-'};"
                         f" since {when})")
        if not items:
            lines.append("(nothing known yet)")
        return "\n".join(lines) + "\n"

    return server


# -- /mcp on the API ---------------------------------------------------------------------------
def _bearer(headers: Any) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class McpHttp:
    """The streamable-HTTP endpoint: bearer auth in the REST error shape, then the SDK's session manager.

    Stateless (every POST stands alone), as the API nodes are: any node can answer any call.
    """

    def __init__(self, get_os: Callable[[], MemoryOS]) -> None:
        self.get_os = get_os

        async def backend_for(ctx: Context) -> MemoryBackend:
            os_ = self.get_os()
            token = _bearer(ctx.headers or {})
            who = await anyio.to_thread.run_sync(lambda: authenticate(os_.records, token)) if token else None
            if who is None:
                raise Unauthenticated("missing or invalid bearer API key")
            return LocalBackend(os_, who)

        self.server = build_server(backend_for)
        # The bearer key is what guards /mcp (a page that rebinds DNS cannot send it), so the
        # SDK's Host/Origin allow-list for localhost is not needed and would reject proxied hosts.
        self.server.streamable_http_app(
            stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager: StreamableHTTPSessionManager = self.server.session_manager

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run inside the app's lifespan (sub-app lifespans are not run by FastAPI)."""
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = _bearer(headers)
        records = self.get_os().records
        if token is None or await anyio.to_thread.run_sync(lambda: authenticate(records, token)) is None:
            response = error_response(401, "unauthenticated", "missing or invalid bearer API key (Authorization: Bearer <key>)")
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
