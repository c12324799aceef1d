"""MCP tools through the official SDK's client: streamable HTTP at /mcp and `memsvc mcp` over stdio."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.clients.conftest import Live

pytestmark = pytest.mark.anyio
TOOLS = ["feedback", "forget", "get", "history", "job_status", "recall", "remember", "update"]


@asynccontextmanager
async def http_client(live: Live, key: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http, \
            Client(streamable_http_client(f"{live.url}/mcp", http_client=http)) as client:
        yield client


@asynccontextmanager
async def stdio_client(live: Live, key: str) -> AsyncIterator[Client]:
    env = {**os.environ, "MEMSVC_URL": live.url, "MEMSVC_API_KEY": key}
    params = StdioServerParameters(command=sys.executable, args=["-m", "api.cli", "mcp"], env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    res = await client.call_tool(tool, args)
    assert not res.is_error, res.content
    out: dict[str, Any] = res.structured_content or {}
    return out


async def error_of(client: Client, tool: str, **args: Any) -> str:
    res = await client.call_tool(tool, args)
    assert res.is_error
    text: str = res.content[0].text  # type: ignore[union-attr]
    prefix = f"Error executing tool {tool}: "  # the SDK's wording; the rest is memsvc's `code: message`
    assert text.startswith(prefix), text
    return text[len(prefix):]


async def test_http_tools_curate_memory_with_provenance(live: Live) -> None:
    async with http_client(live, live.key_a) as c:
        tools = (await c.list_tools()).tools
        assert sorted(t.name for t in tools) == TOOLS
        by_name = {t.name: t for t in tools}
        assert "token budget" in (by_name["recall"].description or "")
        assert by_name["forget"].annotations and by_name["forget"].annotations.destructive_hint is True
        assert by_name["recall"].annotations and by_name["recall"].annotations.read_only_hint is True

        w = await call(c, "remember", user_id="mcp-alice", content="I moved to Berlin in May 2023.",
                       message_id="t1", timestamp="2023-05-20T10:00:00Z", role="user")
        assert [m["source_ids"] for m in w["written"] if m["type"] == "episodic"] == [["t1"]]
        again = await call(c, "remember", user_id="mcp-alice", content="I moved to Berlin in May 2023.", message_id="t1")
        assert again["written"] == [] and [s["message_id"] for s in again["skipped"]] == ["t1"]

        job = await call(c, "remember", user_id="mcp-alice", content="I prefer green tea over coffee.",
                         message_id="t2", wait=False)
        assert job["state"] == "pending" and job["job_id"]
        for _ in range(300):
            status = await call(c, "job_status", job_id=job["job_id"])
            if status["state"] in ("done", "failed"):
                break
        assert status["state"] == "done" and any(m["source_ids"] == ["t2"] for m in status["written"])

        r = await call(c, "recall", user_id="mcp-alice", query="Where does Alice live?", token_budget=60)
        top = min(r["memories"], key=lambda m: m["rank"])
        assert "Berlin" in top["content"] and top["source_ids"] == ["t1"] and top["score"] > 0
        assert "event_time" in top and "Berlin" in r["context"]

        mid = top["id"]
        assert (await call(c, "get", memory_id=mid))["content"] == top["content"]
        up = await call(c, "update", memory_id=mid, content="I moved to Berlin in May 2023 (Kreuzberg).")
        assert up["version"] == 2
        hist = await call(c, "history", memory_id=mid)
        assert [v["change"] for v in hist["versions"]] == ["create", "update"]
        fb = await call(c, "feedback", user_id="mcp-alice", query="Where does Alice live?", used_memory_ids=[mid], helpful=True)
        assert fb == {"recorded": True, "memory_ids": [mid]}

        profile = await c.read_resource("memsvc://users/mcp-alice/profile")
        text = profile.contents[0].text  # type: ignore[union-attr]
        assert text.startswith("# Profile of mcp-alice") and "tea" in text and "t2" in text

        assert (await call(c, "forget", memory_id=mid))["status"] == "deleted"
        r = await call(c, "recall", user_id="mcp-alice", query="Where does Alice live? Berlin", types=["episodic"])
        assert mid not in [m["id"] for m in r["memories"]]
        assert (await error_of(c, "update", memory_id=mid)).startswith("invalid_input")
        w = await call(c, "remember", user_id="mcp-alice", content="My cat is called Miso.", message_id="t3", infer=False)
        keep = w["written"][0]["id"]

    async with http_client(live, live.key_b) as b:  # another tenant: nothing of A's is reachable
        assert (await error_of(b, "get", memory_id=keep)).startswith("not_found")
        assert (await error_of(b, "forget", memory_id=keep)).startswith("not_found")
        assert (await error_of(b, "update", memory_id=keep, content="hacked")).startswith("not_found")
        assert (await error_of(b, "history", memory_id=keep)).startswith("not_found")
        assert (await error_of(b, "feedback", user_id="mcp-alice", query="q", used_memory_ids=[keep])).startswith(
            "not_found")
        assert (await call(b, "recall", user_id="mcp-alice", query="cat Miso"))["memories"] == []
        text = (await b.read_resource("memsvc://users/mcp-alice/profile")).contents[0].text  # type: ignore[union-attr]
        assert "(nothing known yet)" in text

    async with http_client(live, live.key_a_ro) as ro:  # read-only: reads work, writes are refused
        assert (await call(ro, "get", memory_id=keep))["content"].endswith("My cat is called Miso.")
        assert (await error_of(ro, "remember", user_id="mcp-alice", content="x")).startswith("forbidden")
        assert (await error_of(ro, "forget", memory_id=keep)).startswith("forbidden")

    async with http_client(live, live.key_a) as c:
        assert (await call(c, "get", memory_id=keep))["status"] == "active"  # the refused calls changed nothing


async def test_http_mcp_needs_a_valid_key(live: Live) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer msk_not-a-key"}):
        r = httpx.post(f"{live.url}/mcp", json=init, headers={**headers, "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


async def test_stdio_server_reaches_memsvc_over_rest(live: Live) -> None:
    async with stdio_client(live, live.key_a) as c:
        assert sorted(t.name for t in (await c.list_tools()).tools) == TOOLS
        w = await call(c, "remember", user_id="mcp-bob", content="I am allergic to peanuts.", message_id="b1")
        mid = next(m["id"] for m in w["written"] if m["type"] == "episodic")
        r = await call(c, "recall", user_id="mcp-bob", query="What is Bob allergic to?")
        assert r["memories"][0]["source_ids"] == ["b1"]
        assert (await call(c, "history", memory_id=mid))["versions"][0]["change"] == "create"
        assert (await error_of(c, "get", memory_id="nope")).startswith("not_found")
    async with stdio_client(live, live.key_b) as b:
        assert (await error_of(b, "get", memory_id=mid)).startswith("not_found")
    async with stdio_client(live, live.key_a_ro) as ro:
        assert (await error_of(ro, "forget", memory_id=mid)).startswith("forbidden")
