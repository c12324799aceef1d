"""`GET /v1/skills`: the bank with each card's state and the tenant's own statistics."""

from __future__ import annotations

import pytest

from tests.api.conftest import ClientFactory
from tests.api.test_contract import ALICE, write

pytestmark = pytest.mark.anyio


async def test_skills_report_state_and_statistics_per_tenant(client: ClientFactory, keys: dict[str, str]) -> None:
    a, b = client(keys["a"]), client(keys["b"])
    await write(a, ALICE)
    found = (await a.post("/v1/memories/search", json={"user_id": "alice", "query": "Where does Alice live?", "top_k": 3})).json()
    body = (await a.get("/v1/skills")).json()
    cards = {s["id"]: s for s in body["skills"]}
    assert (body["controller"]["kind"], body["controller"]["mode"]) == ("learned", "prune")
    assert (cards["llm-memory-manager"]["active"], cards["llm-memory-manager"]["inactive_reason"]) == (
        False, "no LLM configured (MEMSVC_LLM__KIND)")
    assert cards["episodic-turn"]["stats"]["memories_written"] == 3
    facts = cards["capture-personal-facts"]["stats"]
    assert (facts["spans_selected"], facts["memories_written"]) == (2, 2)  # m1 and m2; the assistant's m3 has no trigger
    recalled = sum(c["stats"]["recalled"] for c in cards.values())
    assert recalled == len(found["results"]) == 3
    assert cards["capture-personal-facts"]["parameters"]["slots"][0]["slot"] == "residence"
    other = {s["id"]: s for s in (await b.get("/v1/skills")).json()["skills"]}
    assert other["episodic-turn"]["stats"] == {"recalled": 0}
