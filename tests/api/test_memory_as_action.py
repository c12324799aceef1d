"""Memory-as-Action: an agent's own inserts, updates and deletes in `POST /v1/memories`
(`operations`), through the same resolution and history as derived memories."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from memsvc.memory_os import MemoryOS
from memsvc.ports import VectorFilter
from tests.api.conftest import ClientFactory
from tests.api.test_contract import ALICE, all_memories, assert_error, write

pytestmark = pytest.mark.anyio


async def post(c: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await c.post("/v1/memories", json={"user_id": "alice", **body})


async def test_insert_update_delete_with_reasons_and_history(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    await write(a, ALICE)
    r = await post(a, {"messages": [{"id": "r1", "role": "assistant", "content": "Noted: Alice prefers short answers."}],
                       "operations": [{"op": "insert", "type": "refined", "content": "Alice prefers short answers.",
                                       "reason": "reflection after the chat", "source_ids": ["r1", "m2"]}]})
    assert r.status_code == 200, r.text
    body = r.json()
    reflection = next(m for m in body["written"] if m["type"] == "refined")
    assert (reflection["content"], reflection["source_ids"], reflection["metadata"]["_reason"]) == (
        "Alice prefers short answers.", ["r1", "m2"], "reflection after the chat")
    assert body["changed"] == []
    berlin = next(m for m in await all_memories(a) if m["content"] == "Alice moved to Berlin in May 2023.")
    r = await post(a, {"messages": [], "operations": [
        {"op": "update", "memory_id": berlin["id"], "content": "Alice moved to Berlin in May 2023 and left in 2024.",
         "reason": "the user corrected it", "source_ids": ["r1"]},
        {"op": "delete", "memory_id": reflection["id"], "reason": "no longer true"},
    ]})
    assert r.status_code == 200, r.text
    changed = {m["id"]: m for m in r.json()["changed"]}
    assert r.json()["written"] == []
    assert (changed[berlin["id"]]["content"], changed[berlin["id"]]["version"], changed[berlin["id"]]["source_ids"]) == (
        "Alice moved to Berlin in May 2023 and left in 2024.", 2, ["m1", "r1"])
    assert changed[reflection["id"]]["status"] == "deleted"
    hist = (await a.get(f"/v1/memories/{berlin['id']}/history")).json()["versions"]
    assert [(v["version"], v["change"]) for v in hist] == [(1, "create"), (2, "update")]
    assert hist[1]["memory"]["metadata"]["_reason"] == "the user corrected it"
    found = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "short answers"})).json()["results"]
    assert reflection["id"] not in [x["id"] for x in found]
    found = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "When did Alice leave Berlin?",
                                                       "types": ["semantic"], "top_k": 1})).json()["results"]
    assert [x["id"] for x in found] == [berlin["id"]]


async def test_an_insert_repeating_a_known_memory_is_declined_and_logged(
        client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    a = client(keys["a"])
    await write(a, ALICE)
    r = await post(a, {"messages": [], "operations": [
        {"op": "insert", "type": "semantic", "content": "Alice moved to Berlin in May 2023.", "reason": "restating"}]})
    assert r.status_code == 200 and r.json()["written"] == []
    event = memory_os.records.events("tenant-a", user_id="alice", kinds=["write"]).items[0]
    assert event.payload["declined"] == [{"skill": "memory-as-action", "source_ids": [], "reason": "repeats a known memory"}]


@pytest.mark.parametrize(("operation", "status", "code"), [
    ({"op": "update", "memory_id": "nope", "content": "x", "reason": "r"}, 404, "not_found"),
    ({"op": "delete", "memory_id": "nope", "reason": "r"}, 404, "not_found"),
    ({"op": "insert", "type": "semantic", "content": "x y z", "reason": "r", "source_ids": ["ghost"]}, 422, "invalid_input"),
    ({"op": "insert", "content": "no type", "reason": "r"}, 422, "invalid_input"),
    ({"op": "insert", "type": "episodic", "content": "turns come from messages", "reason": "r"}, 422, "invalid_input"),
    ({"op": "update", "memory_id": "m", "reason": "r"}, 422, "invalid_input"),
    ({"op": "delete", "memory_id": "m"}, 422, "invalid_input"),
    ({"op": "merge", "memory_id": "m", "reason": "r"}, 422, "invalid_input"),
])
async def test_a_rejected_operation_changes_nothing(
        client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS, operation: dict[str, Any], status: int, code: str) -> None:
    a = client(keys["a"])
    await write(a, ALICE)
    before = await all_memories(a)
    messages = [{"id": "new", "role": "user", "name": "Alice", "content": "I moved to Paris."}]
    assert_error(await post(a, {"messages": messages, "operations": [operation]}), status, code)
    assert await all_memories(a) == before
    assert memory_os.records.known_message_ids("tenant-a", "alice", ["new"]) == set()
    assert memory_os.vectors.count(VectorFilter(tenant="tenant-a", user_id="alice")) == len(before)


async def test_another_tenants_memory_cannot_be_changed(client: ClientFactory, keys: dict[str, str]) -> None:
    a, b = client(keys["a"]), client(keys["b"])
    mid = (await write(a, ALICE))["written"][0]["id"]
    assert_error(await post(b, {"messages": [], "operations": [{"op": "delete", "memory_id": mid, "reason": "r"}]}),
                 404, "not_found")
    assert (await a.get(f"/v1/memories/{mid}")).json()["status"] == "active"


async def test_messages_stay_required_without_operations(client: ClientFactory, keys: dict[str, str]) -> None:
    a = client(keys["a"])
    assert_error(await post(a, {"messages": []}), 422, "invalid_input")
    assert_error(await a.post("/v1/memories", json={"user_id": "alice"}), 422, "invalid_input")
    r = await post(a, {"messages": ALICE[:1]})
    assert r.status_code == 200 and set(r.json()) == {"written", "skipped"}  # no `changed` without operations
