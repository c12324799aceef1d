"""Issue 13 (A14): the OpenAPI document lists every status a route really answers."""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from memsvc.memory_os import MemoryOS
from tests.api.conftest import ClientFactory
from tests.api.test_contract import ALICE, write

pytestmark = pytest.mark.anyio

AUTHED = {"401", "422", "429", "503"}
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("post", "/v1/memories"): {"200", "202", "403", "404", "409", "413"} | AUTHED,
    ("get", "/v1/memories"): {"200"} | AUTHED,
    ("post", "/v1/memories/search"): {"200", "413"} | AUTHED,
    ("get", "/v1/memories/{memory_id}"): {"200", "404"} | AUTHED,
    ("patch", "/v1/memories/{memory_id}"): {"200", "403", "404", "409", "413"} | AUTHED,
    ("delete", "/v1/memories/{memory_id}"): {"200", "403", "404"} | AUTHED,
    ("get", "/v1/memories/{memory_id}/history"): {"200", "404"} | AUTHED,
    ("get", "/v1/jobs/{job_id}"): {"200", "404"} | AUTHED,
    ("post", "/v1/feedback"): {"200", "403", "404", "413"} | AUTHED,
    ("delete", "/v1/users/{user_id}"): {"200", "403"} | AUTHED,
    ("get", "/v1/users/{user_id}/graph"): {"200"} | AUTHED,
    ("get", "/v1/skills"): {"200"} | AUTHED,
    ("get", "/v1/policies"): {"200"} | AUTHED,
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200"},
}


def documented(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, p): op["responses"] for p, ops in spec["paths"].items() if not p.startswith("/admin")
            for m, op in ops.items()}


def test_every_route_documents_its_statuses_with_the_error_model(memory_os: MemoryOS) -> None:
    spec = create_app(memory_os=memory_os).openapi()
    docs = documented(spec)
    assert set(EXPECTED) <= set(docs)
    for route, statuses in EXPECTED.items():
        assert set(docs[route]) == statuses, route
    for route, responses in docs.items():  # routes added later follow the same rule
        if not route[1].startswith("/v1"):
            continue
        assert {"401", "422"} <= set(responses), route
        for status, resp in responses.items():
            if int(status) >= 400:
                ref = resp["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", (route, status)
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"}
    assert set(docs[("get", "/metrics")]["200"]["content"]) == {"text/plain"}


# (method, path template, concrete path, json body, which key) -> a status the route really gives
PROBES: list[tuple[str, str, str, Any, str | None]] = [
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice", "messages": ALICE[:1], "wait": False}, "a"),
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice", "messages": ALICE[:1]}, "a_ro"),
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice", "messages": [{"role": "user", "content": "x" * 40_000}]}, "a"),
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice"}, "a"),
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice", "messages": [], "operations": [
        {"op": "delete", "memory_id": "unknown", "reason": "gone"}]}, "a"),
    ("post", "/v1/memories", "/v1/memories", {"user_id": "alice", "messages": ALICE[:1]}, None),
    ("get", "/v1/memories", "/v1/memories?limit=0", None, "a"),
    ("post", "/v1/memories/search", "/v1/memories/search", {"user_id": "alice", "query": "x", "preset": "magic"}, "a"),
    ("get", "/v1/memories/{memory_id}", "/v1/memories/nope", None, "a"),
    ("patch", "/v1/memories/{memory_id}", "/v1/memories/nope", {"importance": 0.2}, "a"),
    ("patch", "/v1/memories/{memory_id}", "/v1/memories/MID", {"content": "x" * 40_000}, "a"),
    ("patch", "/v1/memories/{memory_id}", "/v1/memories/MID", {"content": None}, "a"),
    ("patch", "/v1/memories/{memory_id}", "/v1/memories/MID", {"importance": 0.2}, "a_ro"),
    ("delete", "/v1/memories/{memory_id}", "/v1/memories/nope", None, "a"),
    ("get", "/v1/memories/{memory_id}/history", "/v1/memories/nope/history", None, "a"),
    ("get", "/v1/jobs/{job_id}", "/v1/jobs/nope", None, "a"),
    ("post", "/v1/feedback", "/v1/feedback", {"user_id": "alice", "query": "x", "used_memory_ids": ["nope"]}, "a"),
    ("delete", "/v1/users/{user_id}", "/v1/users/%20", None, "a"),
    ("delete", "/v1/users/{user_id}", "/v1/users/alice", None, "a_ro"),
    ("get", "/v1/users/{user_id}/graph", "/v1/users/alice/graph?cursor=bad", None, "a"),
    ("get", "/v1/skills", "/v1/skills", None, None),
    ("get", "/v1/policies", "/v1/policies", None, "a"),
    ("get", "/metrics", "/metrics", None, None),
    ("get", "/readyz", "/readyz", None, None),
]


async def test_real_statuses_are_documented(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    docs = documented(create_app(memory_os=memory_os).openapi())
    mid = (await write(client(keys["a"]), ALICE[:1]))["written"][0]["id"]
    seen: dict[tuple[str, str], set[str]] = {}
    for method, template, path, body, key in PROBES:
        c = client(keys[key] if key else None)
        r = await c.request(method.upper(), path.replace("MID", mid), json=body)
        seen.setdefault((method, template), set()).add(str(r.status_code))
        assert str(r.status_code) in docs[(method, template)], (method, path, r.status_code, r.text)
    # the probes reach every documented error status but the few that need a broken backend
    assert seen[("post", "/v1/memories")] == {"202", "401", "403", "404", "413", "422"}
    assert seen[("patch", "/v1/memories/{memory_id}")] == {"403", "404", "413", "422"}
    assert r.headers["content-type"].startswith("application/json")
    metrics = await client(None).get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
