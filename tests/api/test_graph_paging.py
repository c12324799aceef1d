"""Issue 13 (A9): the graph view pages entities and relations each on its own position."""

from __future__ import annotations

from typing import Any

import pytest

from memsvc.memory_os import MemoryOS
from tests.api.conftest import ClientFactory
from tests.api.test_contract import assert_error, write

pytestmark = pytest.mark.anyio

FACTS = [
    {"id": f"g{i}", "role": "user", "name": "Alice", "content": text}
    for i, text in enumerate([
        "I moved to Berlin in May 2023.", "My cat is called Miso.", "My sister Clara works at Siemens.",
        "Bob lives in Munich.", "I work at Zalando.", "Clara is married to Tom.",
    ])
]


async def test_graph_pages_cover_every_entity_and_relation_once(
    client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS
) -> None:
    a = client(keys["a"])
    await write(a, FACTS)
    assert memory_os.graph is not None
    all_ents = memory_os.graph.entities("tenant-a", "alice", limit=1000).items
    all_rels = memory_os.graph.relations("tenant-a", "alice", limit=1000).items
    assert len(all_ents) > 2 and len(all_rels) > 2 and len(all_ents) != len(all_rels)
    ents: list[dict[str, Any]] = []
    rels: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        r = await a.get("/v1/users/alice/graph", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"entities", "relations", "next_cursor"}
        assert len(body["entities"]) <= 2 and len(body["relations"]) <= 2
        ents += body["entities"]
        rels += body["relations"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in ents] == [e.id for e in all_ents]
    assert [r["id"] for r in rels] == [r.id for r in all_rels]
    assert pages == (max(len(all_ents), len(all_rels)) + 1) // 2


async def test_graph_rejects_a_bad_cursor(client: ClientFactory, keys: dict[str, str]) -> None:
    assert_error(await client(keys["a"]).get("/v1/users/alice/graph", params={"cursor": "garbage"}), 422, "invalid_input")
