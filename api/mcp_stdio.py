"""`memsvc mcp`: the MCP tools over stdio, for desktop agents, reaching a running memsvc over REST."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from api.mcp import PROFILE_TYPES, build_server
from memsvc_client import APIError, AsyncMemsvcClient, MemsvcClientError
from memsvc_client.models import JobStatus, WriteResult


class RestBackend:
    """`MemoryBackend` over REST v1 with the async SDK: the key decides tenant and rights, server-side."""

    def __init__(self, client: AsyncMemsvcClient) -> None:
        self.c = client

    async def remember(self, body: dict[str, Any]) -> dict[str, Any]:
        out = await self.c.add(**body)
        if isinstance(out, WriteResult):
            return out.model_dump(mode="json")
        return {"job_id": out.id}

    async def job(self, job_id: str) -> dict[str, Any]:
        status: JobStatus = await self.c.job(job_id)
        return status.model_dump(mode="json")

    async def recall(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.c.search(**body)).model_dump(mode="json")

    async def get(self, memory_id: str) -> dict[str, Any]:
        return (await self.c.get(memory_id)).model_dump(mode="json")

    async def update(self, memory_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        return (await self.c.update(memory_id, **patch)).model_dump(mode="json")

    async def forget(self, memory_id: str) -> dict[str, Any]:
        return (await self.c.delete(memory_id)).model_dump(mode="json")

    async def history(self, memory_id: str) -> dict[str, Any]:
        hist = await self.c.history(memory_id)
        return {"memory_id": hist.memory_id, "versions": [
            {"version": v.version, "change": v.change, "changed_at": v.changed_at.isoformat(),
             "content": v.memory.get("content"), "status": v.memory.get("status")} for v in hist.versions]}

    async def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.c.feedback(**body)).model_dump(mode="json")

    async def profile(self, user_id: str) -> list[dict[str, Any]]:
        page = await self.c.list_memories(user_id, types=list(PROFILE_TYPES), statuses=["active"], limit=200)
        return [m.model_dump(mode="json") for m in page.items]


async def serve_stdio(url: str | None, key: str | None) -> None:
    async with AsyncMemsvcClient(url, key) as client:
        backend = RestBackend(client)

        async def backend_for(ctx: Context) -> RestBackend:  # one key for the whole process
            return backend

        server = build_server(backend_for, expected=(APIError, MemsvcClientError))
        await server.run_stdio_async()
