"""The learned gates through REST: rerank presets, `why`, importance from the write gate, policies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from memsvc.learn import cross as X
from memsvc.learn import gates as G
from memsvc.learn.features import LENGTH_FLOOR, pair_text, with_previous, write_features
from memsvc.learn.second import SecondEmbedder
from memsvc.memory_os import MemoryOS
from memsvc.models import Role
from memsvc.write.pipeline import episodic_content
from tests.api.conftest import ClientFactory

pytestmark = pytest.mark.anyio

TURNS = [
    {"id": "m1", "role": "user", "name": "Caroline", "content": "I moved to Berlin in May, the flat is lovely.",
     "timestamp": "2023-05-20T10:00:00Z"},
    {"id": "m2", "role": "user", "name": "Melanie", "content": "Nice! We went camping with the kids last weekend.",
     "timestamp": "2023-05-20T10:01:00Z"},
    {"id": "m3", "role": "user", "name": "Caroline", "content": "Hey, how are you?", "timestamp": "2023-05-20T10:02:00Z"},
]


async def test_rerank_preset_orders_by_the_read_gate_and_explains_it(client: ClientFactory, keys: dict[str, str]) -> None:
    c = client(keys["a"])
    assert (await c.post("/v1/memories", json={"user_id": "u1", "messages": TURNS})).status_code == 200
    r = await c.post("/v1/memories/search", json={"user_id": "u1", "query": "Where did Caroline move to?",
                                                  "preset": "hybrid_rerank", "explain": True, "top_k": 5})
    assert r.status_code == 200
    results = sorted(r.json()["results"], key=lambda x: x["rank"])
    assert results and "Berlin" in results[0]["content"]
    for res in results:
        assert res["why"]["preset"] == "hybrid_rerank"
        assert res["why"]["fused"]["rank"] >= 1
        assert set(res["why"]["router"]) == {"dense", "keyword", "graph"}
        assert all(0.0 < v < 1.0 for v in res["why"]["router"].values())
    # Ordered by expected evidence per token: the read gate's logit less log(tokens) (at least 8); the
    # result's score is that key through a sigmoid, so scores fall with rank.
        # the candidate's cosine to the query as the read gate's query adapter moved it
        assert -1.0 <= res["why"]["rerank"]["query_cosine"] <= 1.0
    # and its cosine to the query in the second embedder's space (e5, `query:` against `passage:`)
    second = SecondEmbedder()
    q = second.encode_query("Where did Caroline move to?")
    for res in results:
        assert res["why"]["rerank"]["second_cosine"] == pytest.approx(
            float(second.encode([res["content"]])[0] @ q), abs=1e-5)
    keys = [x["why"]["rerank"]["per_token"] for x in results]
    assert keys == sorted(keys, reverse=True)
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)
    for res in results:
        p = res["why"]["rerank"]["score"]
        assert res["why"]["rerank"]["per_token"] == pytest.approx(
            math.log(p / (1.0 - p)) - math.log(max(res["why"]["tokens"], LENGTH_FLOOR)), abs=1e-3)
        assert res["score"] == pytest.approx(1.0 / (1.0 + math.exp(-res["why"]["rerank"]["per_token"])), abs=1e-5)


async def test_importance_is_the_write_gates_memorability(client: ClientFactory, keys: dict[str, str],
                                                         memory_os: MemoryOS) -> None:
    c = client(keys["a"])
    r = await c.post("/v1/memories", json={"user_id": "u2", "messages": TURNS, "infer": False})
    written = {m["source_ids"][0]: m for m in r.json()["written"]}
    assert memory_os.gate is not None
    texts = [episodic_content(Role.USER, t["name"], t["content"]) for t in TURNS]
    emb = memory_os.embedder.embed(texts)
    side = with_previous(emb, np.stack([write_features("user", t["content"]) for t in TURNS]))
    p = memory_os.gate.memorability(emb, side)
    assert [written[t["id"]]["importance"] for t in TURNS] == [round(float(x), 4) for x in p]


async def test_the_write_gate_reads_the_scopes_previous_turn_across_requests(client: ClientFactory, keys: dict[str, str],
                                                                           memory_os: MemoryOS) -> None:
    """A turn written alone is scored with the scope's last turn before it, which the segmentation
    state carries from the previous request (its vector and signals); a scope's first turn has none."""
    c = client(keys["a"])
    for t in TURNS:  # one request per turn
        assert (await c.post("/v1/memories", json={"user_id": "u4", "messages": [t], "infer": False})).status_code == 200
    assert memory_os.writer.gate is not None  # the learned write gate scored them, not the heuristic
    stored = {m["source_ids"][0]: m["importance"] for m in (await c.get("/v1/memories", params={"user_id": "u4"})).json()["items"]}
    texts = [episodic_content(Role.USER, t["name"], t["content"]) for t in TURNS]
    single = np.vstack([memory_os.embedder.embed([x]) for x in texts])  # what each request embedded
    signals = np.stack([write_features("user", t["content"]) for t in TURNS])
    expected = [memory_os.gate.memorability(single[i:i + 1], with_previous(
        single[i:i + 1], signals[i:i + 1], None if i == 0 else (single[i - 1], signals[i - 1])))[0] for i in range(len(TURNS))]
    assert [stored[t["id"]] for t in TURNS] == pytest.approx([round(float(x), 4) for x in expected], abs=1.5e-4)
    state = memory_os.records.episode_state("tenant-a", "u4")
    assert state is not None and state.last_signals == pytest.approx([round(float(x), 6) for x in signals[-1]])
    # Without the previous turn the later turns score differently: the state is what carried it.
    isolated = [memory_os.gate.memorability(single[i:i + 1], with_previous(single[i:i + 1], signals[i:i + 1]))[0]
                for i in (1, 2)]
    assert max(abs(stored[TURNS[i]["id"]] - float(p)) for i, p in zip((1, 2), isolated, strict=True)) > 1e-3


async def test_policies_report_the_loaded_gates_with_their_manifest_metrics(client: ClientFactory, keys: dict[str, str]) -> None:
    r = await client(keys["a"]).get("/v1/policies")
    body = r.json()
    manifest = json.loads((G.PACKAGED / "manifest.json").read_text())
    assert body["gates"]["metrics"] == manifest["metrics"]
    assert body["gates"]["data"] == manifest["data"]
    assert body["write_gate"]["kind"] == "learned"
    assert body["write_gate"]["metrics"] == manifest["metrics"]["write"]
    assert body["read_gate"]["reranker"]["kind"] == "learned"
    assert set(body["read_gate"]["reranker"]["presets"]) == {"hybrid_rerank", "hybrid_ppr_rerank", "hybrid_temporal_rerank",
                                                             "hybrid_temporal_cross"}
    adapter = body["read_gate"]["query_adapter"]
    assert adapter["kind"] == "learned" and adapter["metrics"] == manifest["metrics"]["query"]
    assert "hybrid_temporal_adapted" in adapter["used_by"]


async def test_adapted_preset_searches_with_the_moved_query(client: ClientFactory, keys: dict[str, str],
                                                            memory_os: MemoryOS) -> None:
    c = client(keys["a"])
    assert (await c.post("/v1/memories", json={"user_id": "u3", "messages": TURNS, "infer": False})).status_code == 200
    query = "Where did Caroline move to?"
    r = await c.post("/v1/memories/search", json={"user_id": "u3", "query": query, "preset": "hybrid_temporal_adapted",
                                                  "explain": True, "top_k": 3})
    assert r.status_code == 200
    results = sorted(r.json()["results"], key=lambda x: x["rank"])
    assert results and "Berlin" in results[0]["content"] and results[0]["why"]["preset"] == "hybrid_temporal_adapted"
    # the dense retriever's score is the cosine to the adapted query, not to the plain one
    assert memory_os.gate is not None
    plain = memory_os.embedder.embed_query(query)
    moved = memory_os.gate.adapt(plain[None])[0]
    vec = memory_os.embedder.embed([results[0]["content"]])[0]
    assert results[0]["why"]["retrievers"]["dense"]["score"] == pytest.approx(float(moved @ vec), abs=2e-3)
    assert abs(float(moved @ vec) - float(plain @ vec)) > 1e-3


async def test_cross_preset_resorts_the_read_gates_top_by_both_models_and_explains_it(
        client: ClientFactory, keys: dict[str, str], memory_os: MemoryOS) -> None:
    c = client(keys["a"])
    assert (await c.post("/v1/memories", json={"user_id": "u7", "messages": TURNS})).status_code == 200
    query = "Where did Caroline move to?"
    r = await c.post("/v1/memories/search", json={"user_id": "u7", "query": query, "preset": "hybrid_temporal_cross",
                                                  "explain": True, "top_k": 5})
    assert r.status_code == 200
    results = sorted(r.json()["results"], key=lambda x: x["rank"])
    assert results and "Berlin" in results[0]["content"]
    assert memory_os.gate is not None

    def logit(p: float) -> float:
        return math.log(p / (1.0 - p))

    # every result is within the cross depth (30): each carries the cross-encoder's logit, which is the
    # gate model's own for the memory as it reads it
    for res in results:
        assert res["why"]["preset"] == "hybrid_temporal_cross" and "cross_skipped" not in res["why"]["rerank"]
        day = (res.get("event_time") or res.get("valid_from") or "")[:10]
        (own,) = memory_os.gate.cross(query, [pair_text(res["content"], day)])
        assert res["why"]["rerank"]["cross"] == pytest.approx(float(own), abs=1e-4)
    # ordered by the sum of both logits per token; scores still fall with rank
    both = [logit(x["why"]["rerank"]["score"]) + x["why"]["rerank"]["cross"]
            - math.log(max(x["why"]["tokens"], LENGTH_FLOOR)) for x in results]
    assert all(a >= b - 1e-3 for a, b in zip(both, both[1:], strict=False))
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)
    # the read gate alone (same candidates) carries no cross logit
    r = await c.post("/v1/memories/search", json={"user_id": "u7", "query": query, "preset": "hybrid_temporal_rerank",
                                                  "explain": True, "top_k": 5})
    assert all("cross" not in x["why"]["rerank"] for x in r.json()["results"])
    policies = (await c.get("/v1/policies")).json()
    assert policies["read_gate"]["cross_encoder"]["kind"] == "learned"
    assert policies["read_gate"]["cross_encoder"]["presets"] == ["hybrid_temporal_cross"]
    assert policies["gates"]["cross"]["metrics"] == json.loads((X.PACKAGED / "manifest.json").read_text())["metrics"]
