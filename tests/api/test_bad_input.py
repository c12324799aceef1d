"""Bad input: a clear JSON error, the right status, and an unchanged store."""

from __future__ import annotations

from typing import Any

import pytest

from memsvc.memory_os import MemoryOS
from memsvc.ports import MemoryQuery, VectorFilter
from tests.api.conftest import ClientFactory
from tests.api.test_contract import ALICE, assert_error, write

pytestmark = pytest.mark.anyio


def snapshot(os_: MemoryOS) -> tuple[Any, ...]:
    page = os_.records.list_memories("tenant-a", MemoryQuery(limit=500))
    return (
        [m.model_dump() for m in page.items],
        os_.vectors.count(VectorFilter(tenant="tenant-a")),
        len(os_.records.pending_outbox()),
    )


BAD_WRITES: list[tuple[Any, int, str]] = [
    ({"messages": ALICE}, 422, "invalid_input"),  # no user_id
    ({"user_id": "alice", "messages": []}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"role": "robot", "content": "x"}]}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"role": "user", "content": ""}]}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"role": "user", "content": "x", "timestamp": "yesterday"}]}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"role": "user", "content": "x", "colour": "red"}]}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"id": "d", "role": "user", "content": "x"}, {"id": "d", "role": "user", "content": "y"}]}, 422, "invalid_input"),
    ({"user_id": "al ice", "messages": [{"role": "user", "content": "x"}]}, 422, "invalid_input"),
    ({"user_id": "alice", "messages": [{"role": "user", "content": "x" * 40_000}]}, 413, "payload_too_large"),
    ({"user_id": "alice", "messages": [{"role": "user", "content": "x"}] * 501}, 413, "payload_too_large"),
    ([1, 2, 3], 422, "invalid_input"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_WRITES)
async def test_bad_writes_change_nothing(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, body: Any, status: int, code: str
) -> None:
    a = client(keys["a"])
    await write(a, ALICE[:1])
    before = snapshot(memory_os)
    assert_error(await a.post("/v1/memories", json=body), status, code)
    assert snapshot(memory_os) == before


async def test_malformed_json_and_oversized_body(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    before = snapshot(memory_os)
    r = await a.post("/v1/memories", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input")
    r = await a.post("/v1/memories", content=b"x" * 2_500_000, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    assert snapshot(memory_os) == before


@pytest.mark.parametrize("body", [
    {"user_id": "alice", "query": "x", "top_k": 201},
    {"user_id": "alice", "query": "x", "top_k": 0},
    {"user_id": "alice", "query": ""},
    {"user_id": "alice", "query": "x", "types": ["dream"]},
    {"user_id": "alice", "query": "x", "as_of": "not a date"},
    {"user_id": "alice", "query": "x", "preset": "magic"},
    {"user_id": "alice", "query": "x", "token_budget": -5},
    {"user_id": "alice", "query": "x", "filters": {"colour": "red"}},
])
async def test_bad_searches(client: ClientFactory, keys: dict[str, str], body: dict[str, Any]) -> None:
    assert_error(await client(keys["a"]).post("/v1/memories/search", json=body), 422, "invalid_input")


async def test_auth_errors(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    before = snapshot(memory_os)
    assert_error(await client(None).post("/v1/memories", json={"user_id": "a", "messages": ALICE}), 401, "unauthenticated")
    assert_error(await client("msk_wrong").get("/v1/memories"), 401, "unauthenticated")
    assert_error(await client(keys["a_ro"]).post("/v1/memories", json={"user_id": "a", "messages": ALICE}), 403, "forbidden")
    assert_error(await client(keys["a_ro"]).delete("/v1/users/alice"), 403, "forbidden")
    assert snapshot(memory_os) == before
    assert (await client(keys["a_ro"]).post("/v1/memories/search", json={"user_id": "alice", "query": "x"})).status_code == 200


async def test_bad_list_patch_and_unknown_ids(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    before = snapshot(memory_os)
    assert_error(await a.get("/v1/memories", params={"type": "dream"}), 422, "invalid_input")
    assert_error(await a.get("/v1/memories", params={"cursor": "garbage!"}), 422, "invalid_input")
    assert_error(await a.get("/v1/memories", params={"limit": 0}), 422, "invalid_input")
    assert_error(await a.patch(f"/v1/memories/{mid}", json={"status": "superseded"}), 422, "invalid_input")
    assert_error(await a.patch(f"/v1/memories/{mid}", json={}), 422, "invalid_input")
    assert_error(await a.patch(f"/v1/memories/{mid}", json={"importance": 3}), 422, "invalid_input")
    assert_error(await a.patch(f"/v1/memories/{mid}", json={"valid_from": "2024-01-02T00:00:00Z", "valid_to": "2024-01-01T00:00:00Z"}), 422, "invalid_input")
    assert_error(await a.get("/v1/memories/nope"), 404, "not_found")
    assert_error(await a.get("/v1/jobs/nope"), 404, "not_found")
    assert_error(await a.get("/v1/nowhere"), 404, "not_found")
    assert_error(await a.put("/v1/memories"), 405, "method_not_allowed")
    assert snapshot(memory_os) == before
