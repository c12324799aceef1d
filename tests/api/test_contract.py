"""REST contract v1 through the real app (ASGITransport), with the acceptance session of §5."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from memsvc.memory_os import MemoryOS
from memsvc.ports import VectorFilter
from tests.api.conftest import ClientFactory

pytestmark = pytest.mark.anyio

ALICE = [
    {"id": "m1", "role": "user", "name": "Alice", "content": "I moved to Berlin in May 2023.", "timestamp": "2023-05-20T10:00:00Z"},
    {"id": "m2", "role": "user", "name": "Alice", "content": "My cat is called Miso.", "timestamp": "2023-05-20T10:01:00Z"},
    {"id": "m3", "role": "assistant", "content": "Nice! How is Miso settling in?", "timestamp": "2023-05-20T10:01:30Z"},
]


async def write(c: httpx.AsyncClient, messages: list[dict[str, Any]], user: str = "alice", **extra: Any) -> dict[str, Any]:
    r = await c.post("/v1/memories", json={"user_id": user, "messages": messages, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def all_memories(c: httpx.AsyncClient, user: str = "alice") -> list[dict[str, Any]]:
    r = await c.get("/v1/memories", params={"user_id": user, "limit": 500})
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    return min(results, key=lambda r: r["rank"])


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_acceptance_session(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    body = await write(a, ALICE)
    types = sorted((m["type"], tuple(m["source_ids"])) for m in body["written"])
    assert types == [
        ("episodic", ("m1",)), ("episodic", ("m2",)), ("episodic", ("m3",)),
        ("semantic", ("m1",)), ("semantic", ("m2",)),
    ]
    assert body["skipped"] == []
    r = await a.post("/v1/memories/search", json={"user_id": "alice", "query": "Where does Alice live?", "explain": True})
    assert r.status_code == 200
    top = best(r.json()["results"])
    assert "Berlin" in top["content"]
    assert top["source_ids"] == ["m1"]
    assert r.json()["results"][0]["id"] == top["id"]  # reader order starts with the strongest
    assert set(top["why"]["retrievers"]) <= {"dense", "keyword"}
    assert "Berlin" in r.json()["context"].splitlines()[0]


async def test_write_is_idempotent_by_message_id(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    await write(a, ALICE[:1])
    before = await all_memories(a)
    again = await write(a, ALICE[:2])
    assert again["skipped"] == [{"message_id": "m1", "reason": "duplicate message id"}]
    assert [m["source_ids"] for m in again["written"]] == [["m2"], ["m2"]]
    assert len(await all_memories(a)) == len(before) + 2


async def test_infer_false_stores_episodic_only(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    body = await write(a, ALICE, infer=False)
    assert [m["type"] for m in body["written"]] == ["episodic"] * 3
    assert [m["content"] for m in body["written"]][:1] == ["Alice: I moved to Berlin in May 2023."]
    assert body["written"][2]["content"].startswith("assistant: ")


async def test_other_tenant_sees_nothing_on_every_route(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a, b = client(keys["a"]), client(keys["b"])
    written = (await write(a, ALICE))["written"]
    mid = written[0]["id"]
    before = await all_memories(a)
    assert_error(await b.get(f"/v1/memories/{mid}"), 404, "not_found")
    assert_error(await b.get(f"/v1/memories/{mid}/history"), 404, "not_found")
    assert_error(await b.patch(f"/v1/memories/{mid}", json={"content": "hacked"}), 404, "not_found")
    assert_error(await b.delete(f"/v1/memories/{mid}"), 404, "not_found")
    assert_error(await b.post("/v1/feedback", json={"user_id": "alice", "query": "q", "used_memory_ids": [mid]}), 404, "not_found")
    r = await b.post("/v1/memories/search", json={"user_id": "alice", "query": "Berlin"})
    assert r.status_code == 200 and r.json() == {"results": [], "context": ""}
    assert (await b.get("/v1/memories", params={"user_id": "alice"})).json() == {"items": [], "next_cursor": None}
    assert (await b.get("/v1/users/alice/graph")).json()["entities"] == []
    r = await b.delete("/v1/users/alice")
    assert r.status_code == 200
    assert r.json()["deleted"]["memories"] == 0 and r.json()["deleted"]["messages"] == 0
    assert await all_memories(a) == before
    assert memory_os.vectors.count(VectorFilter(tenant="tenant-a", user_id="alice")) == len(before)
    job = (await a.post("/v1/memories", json={"user_id": "alice", "messages": ALICE[:1], "wait": False})).json()["job_id"]
    assert_error(await b.get(f"/v1/jobs/{job}"), 404, "not_found")


async def test_update_history_delete_restore(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    written = (await write(a, ALICE[1:2], infer=False))["written"]
    mid = written[0]["id"]
    r = await a.patch(f"/v1/memories/{mid}", json={"content": "Alice: My cat is called Mochi.", "importance": 0.9})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["importance"] == 0.9
    hist = (await a.get(f"/v1/memories/{mid}/history")).json()["versions"]
    assert [(v["version"], v["change"]) for v in hist] == [(1, "create"), (2, "update")]
    assert hist[0]["memory"]["content"] == "Alice: My cat is called Miso."
    s = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "Mochi", "top_k": 1})).json()["results"]
    assert s[0]["content"] == "Alice: My cat is called Mochi."
    r = await a.delete(f"/v1/memories/{mid}")
    assert r.status_code == 200 and r.json()["status"] == "deleted"
    s = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "cat"})).json()["results"]
    assert s == []
    assert (await a.get(f"/v1/memories/{mid}")).json()["status"] == "deleted"
    assert_error(await a.patch(f"/v1/memories/{mid}", json={"importance": 0.1}), 409, "conflict")
    r = await a.patch(f"/v1/memories/{mid}", json={"status": "active"})
    assert r.status_code == 200 and r.json()["version"] == 4
    s = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "cat"})).json()["results"]
    assert [x["id"] for x in s] == [mid]
    hist = (await a.get(f"/v1/memories/{mid}/history")).json()["versions"]
    assert [v["change"] for v in hist] == ["create", "update", "delete", "restore"]


async def test_newer_fact_supersedes_older_and_as_of_sees_the_past(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    await write(a, [{"id": "b1", "role": "user", "name": "Alice", "content": "I live in Berlin.", "timestamp": "2023-05-01T00:00:00Z"}])
    await write(a, [{"id": "p1", "role": "user", "name": "Alice", "content": "I moved to Paris last week.", "timestamp": "2024-02-01T00:00:00Z"}])
    facts = [m for m in await all_memories(a) if m["type"] == "semantic"]
    by_source = {m["source_ids"][0]: m for m in facts}
    assert by_source["b1"]["status"] == "superseded"
    assert by_source["b1"]["valid_to"] == "2024-02-01T00:00:00Z"
    assert by_source["p1"]["status"] == "active"
    now = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "Where does Alice live?", "types": ["semantic"]})).json()
    assert [r["source_ids"] for r in now["results"]] == [["p1"]]
    then = (await a.post("/v1/memories/search", json={
        "user_id": "alice", "query": "Where does Alice live?", "types": ["semantic"], "as_of": "2023-10-01T00:00:00Z",
    })).json()
    assert [r["source_ids"] for r in then["results"]] == [["b1"]]


async def test_filters_time_range_types_metadata_budget(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    await write(a, ALICE, metadata={"channel": "chat"}, session_id="s1")
    await write(a, [{"id": "x1", "role": "user", "name": "Alice", "content": "I bought a red bike.", "timestamp": "2024-06-01T00:00:00Z"}],
                metadata={"channel": "email"}, session_id="s2")
    r = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "bike", "filters": {"metadata": {"channel": "chat"}}})).json()
    assert all(x["metadata"]["channel"] == "chat" for x in r["results"]) and r["results"]
    r = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "bike", "filters": {"session_id": "s2"}})).json()
    assert {x["session_id"] for x in r["results"]} == {"s2"}
    r = (await a.post("/v1/memories/search", json={
        "user_id": "alice", "query": "anything", "time_range": {"start": "2024-01-01T00:00:00Z"}})).json()
    assert {tuple(x["source_ids"]) for x in r["results"]} == {("x1",)}
    r = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "cat", "types": ["episodic"]})).json()
    assert {x["type"] for x in r["results"]} == {"episodic"}
    r = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "cat", "top_k": 2})).json()
    assert len(r["results"]) == 2
    small = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "Berlin", "token_budget": 15})).json()
    assert 1 <= len(small["results"]) < 6
    assert sum(x for x in [len(line.split()) for line in small["context"].splitlines()]) <= 15


async def test_async_write_job(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    import asyncio

    a = client(keys["a"])
    r = await a.post("/v1/memories", json={"user_id": "alice", "messages": ALICE[:1], "wait": False})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    for _ in range(100):
        state = (await a.get(f"/v1/jobs/{job_id}")).json()
        if state["state"] in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    assert state["state"] == "done"
    assert [m["source_ids"] for m in state["result"]["written"]] == [["m1"], ["m1"]]


async def test_purge_user_removes_everything(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    await write(a, ALICE)
    await write(a, [{"id": "o1", "role": "user", "name": "Bob", "content": "I live in Rome."}], user="bob")
    r = await a.delete("/v1/users/alice")
    assert r.status_code == 200
    deleted = r.json()["deleted"]
    assert deleted["memories"] == 5 and deleted["messages"] == 3
    assert await all_memories(a) == []
    assert memory_os.vectors.count(VectorFilter(tenant="tenant-a", user_id="alice")) == 0
    assert memory_os.records.get_messages("tenant-a", "alice", ["m1", "m2", "m3"]) == []
    assert (await a.get("/v1/users/alice/graph")).json()["entities"] == []
    assert len(await all_memories(a, "bob")) == 2


async def test_feedback_skills_policies(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    r = await a.post("/v1/feedback", json={"user_id": "alice", "query": "where?", "used_memory_ids": [mid], "helpful": True})
    assert r.status_code == 200 and r.json()["recorded"] is True
    skills = (await a.get("/v1/skills")).json()["skills"]
    assert {s["id"] for s in skills} >= {"episodic-turn", "capture-personal-facts", "capture-preferences", "capture-procedures"}
    pol = (await a.get("/v1/policies")).json()
    assert pol["stats"]["memories"] == 2


async def test_system_endpoints(client: ClientFactory) -> None:
    c = client(None)
    assert (await c.get("/healthz")).json() == {"status": "ok"}
    r = await c.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    await c.get("/healthz")
    m = await c.get("/metrics")
    assert m.status_code == 200 and "memsvc_http_requests_total" in m.text
    assert 'memsvc_memories{status="active"}' in m.text and "memsvc_job_queue_depth" in m.text
    assert (await c.get("/docs")).status_code == 200


async def test_every_contract_route_is_documented(client: ClientFactory) -> None:
    spec = (await client(None).get("/openapi.json")).json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    expected = {
        ("POST", "/v1/memories"), ("POST", "/v1/memories/search"), ("GET", "/v1/memories"),
        ("GET", "/v1/memories/{memory_id}"), ("PATCH", "/v1/memories/{memory_id}"),
        ("DELETE", "/v1/memories/{memory_id}"), ("GET", "/v1/memories/{memory_id}/history"),
        ("DELETE", "/v1/users/{user_id}"), ("GET", "/v1/users/{user_id}/graph"), ("POST", "/v1/feedback"),
        ("GET", "/v1/skills"), ("GET", "/v1/policies"), ("GET", "/v1/jobs/{job_id}"),
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    }
    assert expected <= routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method} {path} has no summary"
