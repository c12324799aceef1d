"""Tenant isolation on every REST route, as a rule: another tenant's key, on each route the OpenAPI
lists, reaches nothing of tenant A's and changes nothing. A route added later without a probe here
fails `test_every_route_has_an_isolation_probe`. Runs on the embedded backends and on PostgreSQL
(the `memory_os` fixture); `/admin` and `/mcp` have their own cross-tenant tests
(tests/admin/test_admin_http.py::test_tenant_boundaries_hold, tests/clients/test_mcp.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from api.app import create_app
from memsvc.memory_os import MemoryOS
from memsvc.ports import VectorFilter
from tests.api.conftest import ClientFactory
from tests.api.test_contract import ALICE, all_memories, assert_error, write

pytestmark = pytest.mark.anyio

Probe = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[None]]


async def _not_found(r: Awaitable[httpx.Response]) -> None:
    assert_error(await r, 404, "not_found")


async def _list(b: httpx.AsyncClient, a: dict[str, str]) -> None:
    assert (await b.get("/v1/memories", params={"user_id": "alice"})).json() == {
        "items": [], "next_cursor": None}


async def _write(b: httpx.AsyncClient, a: dict[str, str]) -> None:
    # B writing the same user id and message id writes into B's own scope, never A's
    r = await b.post("/v1/memories", json={"user_id": "alice", "messages": [{**ALICE[0], "content": "I live in Rome."}]})
    assert r.status_code == 200 and r.json()["skipped"] == []


async def _search(b: httpx.AsyncClient, a: dict[str, str]) -> None:
    r = await b.post("/v1/memories/search", json={"user_id": "alice", "query": f"Berlin {MARK} cat Miso", "top_k": 50})
    assert a["mid"] not in [m["id"] for m in r.json()["results"]]
    assert MARK not in r.json()["context"]


async def _policies(b: httpx.AsyncClient, a: dict[str, str]) -> None:
    stats = (await b.get("/v1/policies")).json()["stats"]
    assert stats["memories"] == 0 or stats["users"] <= 1  # only B's own writes, if any


MARK = "Zyxquorb"  # in tenant A's memories only


async def _public(b: httpx.AsyncClient, a: dict[str, str], path: str) -> None:
    r = await b.get(path)
    assert r.status_code in (200, 503) and MARK not in r.text and a["mid"] not in r.text


PROBES: dict[tuple[str, str], Probe] = {
    ("get", "/v1/memories"): _list,
    ("post", "/v1/memories"): _write,
    ("post", "/v1/memories/search"): _search,
    ("get", "/v1/memories/{memory_id}"): lambda b, a: _not_found(b.get(f"/v1/memories/{a['mid']}")),
    ("patch", "/v1/memories/{memory_id}"): lambda b, a: _not_found(b.patch(f"/v1/memories/{a['mid']}", json={"content": "x"})),
    ("delete", "/v1/memories/{memory_id}"): lambda b, a: _not_found(b.delete(f"/v1/memories/{a['mid']}")),
    ("get", "/v1/memories/{memory_id}/history"): lambda b, a: _not_found(b.get(f"/v1/memories/{a['mid']}/history")),
    ("get", "/v1/jobs/{job_id}"): lambda b, a: _not_found(b.get(f"/v1/jobs/{a['job']}")),
    ("post", "/v1/feedback"): lambda b, a: _not_found(b.post("/v1/feedback", json={
        "user_id": "alice", "query": "q", "used_memory_ids": [a["mid"]]})),
    ("delete", "/v1/users/{user_id}"): lambda b, a: _purge_own(b),
    ("get", "/v1/users/{user_id}/graph"): lambda b, a: _graph(b),
    ("get", "/v1/skills"): lambda b, a: _public(b, a, "/v1/skills"),
    ("get", "/v1/policies"): _policies,
    ("get", "/healthz"): lambda b, a: _public(b, a, "/healthz"),
    ("get", "/readyz"): lambda b, a: _public(b, a, "/readyz"),
    ("get", "/metrics"): lambda b, a: _public(b, a, "/metrics"),
}


async def _purge_own(b: httpx.AsyncClient) -> None:
    r = await b.delete("/v1/users/alice")  # purges B's alice only
    assert r.status_code == 200


async def _graph(b: httpx.AsyncClient) -> None:
    body = (await b.get("/v1/users/alice/graph")).json()
    assert all(MARK not in e["name"] for e in body["entities"])


def test_every_route_has_an_isolation_probe(memory_os: MemoryOS) -> None:
    routes = {(m, p) for p, ops in create_app(memory_os=memory_os).openapi()["paths"].items() for m in ops}
    assert routes - set(PROBES) == set(), "add an isolation probe for the new routes"


async def test_another_tenant_reaches_nothing_on_any_route(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS
) -> None:
    a, b = client(keys["a"]), client(keys["b"])
    written = (await write(a, [{**ALICE[0], "content": f"I moved to Berlin with my friend {MARK} in May 2023."},
                               *ALICE[1:]]))["written"]
    job = (await a.post("/v1/memories", json={"user_id": "alice", "wait": False, "messages": [
        {"id": "m9", "role": "user", "content": "I collect stamps."}]})).json()["job_id"]
    assert memory_os.jobs.wait_idle(120)
    ids: dict[str, Any] = {"mid": written[0]["id"], "job": job}
    before = await all_memories(a)
    history = (await a.get(f"/v1/memories/{ids['mid']}/history")).json()
    for route, probe in PROBES.items():
        await probe(b, ids)
        assert await all_memories(a) == before, route  # nothing of A's changed
    assert (await a.get(f"/v1/memories/{ids['mid']}/history")).json() == history
    assert memory_os.vectors.count(VectorFilter(tenant="tenant-a", user_id="alice")) == len(before)
    assert (await a.get(f"/v1/jobs/{job}")).json()["state"] == "done"
