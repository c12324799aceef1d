"""Issue 13 (A): every request is validated once, at the boundary, before anything is changed."""

from __future__ import annotations

from typing import Any

import pytest

from memsvc.memory_os import MemoryOS
from memsvc.models import EPISODE_KEY, SLOT_KEY, SPEAKER_KEY, TURN_KEY
from tests.api.conftest import ClientFactory
from tests.api.test_bad_input import snapshot
from tests.api.test_contract import ALICE, assert_error, write

pytestmark = pytest.mark.anyio


def msg(**extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": "I live in Rome.", **extra}


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    # A1: timestamps that cannot be converted to UTC
    ("write", {"user_id": "alice", "messages": [msg(timestamp="9999-12-31T23:00:00-14:00")]}),
    ("write", {"user_id": "alice", "messages": [msg(timestamp="0001-01-01T00:00:00+14:00")]}),
    ("write_async", {"user_id": "alice", "wait": False, "messages": [msg(timestamp="9999-12-31T23:00:00-14:00")]}),
    ("search", {"user_id": "alice", "query": "x", "as_of": "0001-01-01T00:00:00+14:00"}),
    ("search", {"user_id": "alice", "query": "x", "time_range": {"end": "9999-12-31T23:00:00-14:00"}}),
    # A5: NUL bytes anywhere in a body
    ("write", {"user_id": "al\x00ice", "messages": [msg()]}),
    ("write", {"user_id": "alice", "agent_id": "a\x00", "messages": [msg()]}),
    ("write", {"user_id": "alice", "session_id": "s\x00", "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {"k\x00": "v"}, "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {"k": ["v\x00"]}, "messages": [msg()]}),
    ("search", {"user_id": "alice", "query": "x\x00"}),
    ("search", {"user_id": "alice", "query": "x", "filters": {"metadata": {"k": "v\x00"}}}),
    ("search", {"user_id": "alice", "query": "x", "filters": {"entities": ["Ro\x00me"]}}),
    ("feedback", {"user_id": "alice", "query": "x\x00", "used_memory_ids": []}),
    # A6: the reserved metadata namespace
    ("write", {"user_id": "alice", "metadata": {SLOT_KEY: "residence"}, "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {SPEAKER_KEY: "Bob"}, "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {"_anything": 1}, "messages": [msg()]}),
    # A10: depth, int64 and non-finite numbers
    ("write", {"user_id": "alice", "metadata": deep(9), "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {"n": 10**30}, "messages": [msg()]}),
    ("write", {"user_id": "alice", "metadata": {"n": [-(2**63) - 1]}, "messages": [msg()]}),
    ("search", {"user_id": "alice", "query": "x", "filters": {"metadata": {"n": 10**30}}}),
]


async def _post(a: Any, kind: str, body: dict[str, Any]) -> Any:
    path = {"write": "/v1/memories", "write_async": "/v1/memories", "search": "/v1/memories/search",
            "feedback": "/v1/feedback"}[kind]
    return await a.post(path, json=body)


@pytest.mark.parametrize(("kind", "body"), BAD_BODIES)
async def test_bad_bodies_are_422_and_change_nothing(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, kind: str, body: dict[str, Any]
) -> None:
    a = client(keys["a"])
    await write(a, ALICE[:1])
    before = snapshot(memory_os)
    assert_error(await _post(a, kind, body), 422, "invalid_input")
    assert snapshot(memory_os) == before


@pytest.mark.parametrize("raw", [
    b'{"user_id": "alice", "messages": [{"role": "user", "content": "x"}], "metadata": {"n": NaN}}',
    b'{"user_id": "alice", "messages": [{"role": "user", "content": "x"}], "metadata": {"n": Infinity}}',
    b'{"user_id": "alice", "messages": [{"role": "user", "content": "x"}], "metadata": {"n": 1e400}}',
    b'{"user_id": "alice", "messages": [{"role": "user", "content": "x"}], "metadata": ' + b'{"k": ' * 900
    + b"1" + b"}" * 901,
])
async def test_non_finite_and_deep_json_are_422(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, raw: bytes
) -> None:
    a = client(keys["a"])
    before = snapshot(memory_os)
    r = await a.post("/v1/memories", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input")
    assert snapshot(memory_os) == before


async def test_metadata_at_the_depth_limit_and_int64_bounds_are_stored(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    meta = {"d": deep(7), "lo": -(2**63), "hi": 2**63 - 1, "f": 1.5}
    body = await write(a, [msg(id="m1")], metadata=meta, infer=False)
    assert body["written"][0]["metadata"]["hi"] == 2**63 - 1
    assert body["written"][0]["metadata"]["d"] == deep(7)


@pytest.mark.parametrize("field", ["content", "type", "importance", "metadata", "status"])
async def test_patch_null_for_a_required_field_is_422(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, field: str
) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    before = snapshot(memory_os)
    assert_error(await a.patch(f"/v1/memories/{mid}", json={field: None}), 422, "invalid_input")
    assert snapshot(memory_os) == before


async def test_patch_null_for_a_nullable_field_is_allowed(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    r = await a.patch(f"/v1/memories/{mid}", json={"valid_to": None, "event_time": None})
    assert r.status_code == 200, r.text
    assert r.json()["valid_to"] is None and r.json()["event_time"] is None


@pytest.mark.parametrize("patch", [
    {"metadata": {SLOT_KEY: "residence"}},
    {"metadata": {"k": "v\x00"}},
    {"metadata": deep(9)},
    {"content": "x\x00y"},
    {"valid_to": "9999-12-31T23:00:00-14:00"},
])
async def test_bad_patches_are_422(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, patch: dict[str, Any]) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    before = snapshot(memory_os)
    assert_error(await a.patch(f"/v1/memories/{mid}", json=patch), 422, "invalid_input")
    assert snapshot(memory_os) == before


async def test_patch_metadata_keeps_the_server_keys(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    cube = (await write(a, ALICE[:1], infer=False))["written"][0]
    assert set(cube["metadata"]) == {EPISODE_KEY, TURN_KEY, SPEAKER_KEY}
    r = await a.patch(f"/v1/memories/{cube['id']}", json={"metadata": {"topic": "moving"}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"topic": "moving", EPISODE_KEY: cube["metadata"][EPISODE_KEY],
                                    TURN_KEY: cube["metadata"][TURN_KEY], SPEAKER_KEY: "Alice"}


async def test_patch_content_over_the_write_limit_is_413(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    mid = (await write(a, ALICE[:1]))["written"][0]["id"]
    before = snapshot(memory_os)
    limit = memory_os.settings.limits.max_content_chars
    assert_error(await a.patch(f"/v1/memories/{mid}", json={"content": "x" * (limit + 1)}), 413, "payload_too_large")
    assert snapshot(memory_os) == before


@pytest.mark.parametrize("path", [
    "/v1/users/%20", "/v1/users/a%20b", "/v1/users/a%00b", "/v1/users/%09",
    "/v1/users/" + "u" * 257,
])
async def test_bad_user_ids_in_paths_are_422(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, path: str) -> None:
    a = client(keys["a"])
    await write(a, ALICE[:1])
    before = snapshot(memory_os)
    assert_error(await a.delete(path), 422, "invalid_input")
    assert_error(await a.get(path + "/graph"), 422, "invalid_input")
    assert snapshot(memory_os) == before


@pytest.mark.parametrize(("method", "path", "params"), [
    ("GET", "/v1/memories", {"user_id": "al\x00ice"}),
    ("GET", "/v1/memories", {"q": "x\x00"}),
    ("GET", "/v1/memories", {"cursor": "\x00"}),
    ("GET", "/v1/memories/m%00x", {}),
    ("GET", "/v1/memories/m%00x/history", {}),
    ("DELETE", "/v1/memories/m%00x", {}),
    ("GET", "/v1/jobs/j%00x", {}),
    ("GET", "/v1/users/alice/graph", {"cursor": "\x00"}),
])
async def test_nul_in_query_and_path_params_is_422(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, method: str, path: str, params: dict[str, str]
) -> None:
    a = client(keys["a"])
    await write(a, ALICE[:1])
    before = snapshot(memory_os)
    assert_error(await a.request(method, path, params=params), 422, "invalid_input")
    assert snapshot(memory_os) == before


async def test_oversized_chunked_body_is_413(client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    before = snapshot(memory_os)
    limit = memory_os.settings.limits.max_body_bytes

    async def chunks() -> Any:
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536

    r = await a.post("/v1/memories", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")
    assert snapshot(memory_os) == before


async def test_chunked_body_under_the_limit_is_served(client: ClientFactory, keys: dict[str, str]) -> None:
    import json

    a = client(keys["a"])
    raw = json.dumps({"user_id": "alice", "messages": ALICE[:1]}).encode()

    async def chunks() -> Any:
        for i in range(0, len(raw), 7):
            yield raw[i:i + 7]

    r = await a.post("/v1/memories", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert [m["source_ids"] for m in r.json()["written"]] == [["m1"], ["m1"]]
