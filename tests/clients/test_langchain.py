"""LangChain retriever and LangGraph store against the live server (the store patterns of LangGraph's own tests)."""

from __future__ import annotations

import uuid
from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore, GetOp, Item, PutOp, SearchOp

from memsvc_client import AsyncMemsvcClient, MemsvcClient
from memsvc_client.langchain import MemsvcRetriever
from memsvc_client.langgraph import MemsvcStore, UnsupportedNamespace
from tests.clients.conftest import Live


@pytest.fixture(scope="module")
def seeded(live: Live) -> str:
    user = f"lc-{uuid.uuid4().hex[:6]}"
    with MemsvcClient(live.url, live.key_a) as c:
        c.add(user, [
            {"id": "r1", "role": "user", "content": "I moved to Berlin in May 2023.", "timestamp": "2023-05-20T10:00:00Z"},
            {"id": "r2", "role": "user", "content": "My cat is called Miso.", "timestamp": "2023-05-20T10:01:00Z"},
            {"id": "r3", "role": "user", "content": "I work as a data engineer at a bakery chain.",
             "timestamp": "2023-05-21T09:00:00Z"},
        ], infer=False)
    return user


def test_retriever_returns_documents_with_provenance(live: Live, seeded: str) -> None:
    with MemsvcClient(live.url, live.key_a) as c:
        docs = MemsvcRetriever(client=c, user_id=seeded, top_k=3).invoke("Where does the user live?")
        top = min(docs, key=lambda d: d.metadata["rank"])
        assert top.page_content == "I moved to Berlin in May 2023."
        assert top.metadata["source_ids"] == ["r1"] and top.metadata["type"] == "episodic"
        assert top.metadata["event_time"].startswith("2023-05-20T10:00:00") and top.metadata["score"] > 0
        assert top.id == top.metadata["id"]
        assert len(docs) == 3
        small = MemsvcRetriever(client=c, user_id=seeded, top_k=3, token_budget=25).invoke("Where does the user live?")
        assert [d.metadata["source_ids"] for d in small] == [["r1"]]  # the budget holds one memory


@pytest.mark.anyio
async def test_retriever_ainvoke(live: Live, seeded: str) -> None:
    async with AsyncMemsvcClient(live.url, live.key_a) as ac:
        docs = await MemsvcRetriever(async_client=ac, user_id=seeded, top_k=1).ainvoke("What is the cat's name?")
        assert [d.metadata["source_ids"] for d in docs] == [["r2"]]
    with MemsvcClient(live.url, live.key_a) as c:  # a sync client serves ainvoke too
        docs = await MemsvcRetriever(client=c, user_id=seeded, top_k=1).ainvoke("What is the cat's name?")
        assert docs[0].page_content == "My cat is called Miso."


@pytest.fixture
def store(live: Live) -> MemsvcStore:
    return MemsvcStore(MemsvcClient(live.url, live.key_a), AsyncMemsvcClient(live.url, live.key_a), prefix=("memories",))


def test_put_get_update_delete_round_trip(store: MemsvcStore) -> None:
    user = f"lg-{uuid.uuid4().hex[:6]}"
    ns = ("memories", user)
    value = {"text": "prefers dark mode", "n": 3, "tags": ["ui", "ünïcode"], "nested": {"a": [1, 2.5, None, True]}}
    store.put(ns, "pref/ui", value)
    item = store.get(ns, "pref/ui")
    assert isinstance(item, Item)
    assert (item.namespace, item.key, item.value) == (ns, "pref/ui", value)
    assert store.get(ns, "missing") is None
    assert store.get(("memories", user, "agent-x"), "pref/ui") is None  # another scope

    store.put(ns, "pref/ui", {"text": "prefers light mode"})
    updated = store.get(ns, "pref/ui")
    assert updated is not None and updated.value == {"text": "prefers light mode"}
    assert updated.created_at == item.created_at and updated.updated_at > item.updated_at
    with MemsvcClient(store.client.config.base_url, store.client.config.api_key) as c:  # type: ignore[union-attr]
        [mem] = [m for m in c.iter_memories(user) if m.metadata.get("lg_key") == "pref/ui"]
        assert mem.version == 2  # memsvc kept the first value in the history
        assert [v.memory["content"] for v in c.history(mem.id).versions][0].startswith('{"n": 3')

    store.delete(ns, "pref/ui")
    assert store.get(ns, "pref/ui") is None
    assert store.search(ns) == []


def test_search_list_and_batch(store: MemsvcStore) -> None:
    user = f"lg-{uuid.uuid4().hex[:6]}"
    store.batch([
        PutOp(("memories", user), "k1", {"text": "likes hiking in the Alps", "kind": "hobby", "year": 2021}),
        PutOp(("memories", user), "k2", {"text": "allergic to peanuts", "kind": "health", "year": 2019}),
        PutOp(("memories", user, "coach"), "k3", {"text": "runs 10 km on Sundays", "kind": "hobby", "year": 2023}),
        PutOp(("memories", user, "coach", "s1"), "k4", {"text": "asked about marathon shoes", "kind": "hobby",
                                                         "year": 2024}),
    ])
    everything = store.search(("memories", user), limit=10)
    assert sorted(i.key for i in everything) == ["k1", "k2", "k3", "k4"]
    assert sorted(i.key for i in store.search(("memories", user, "coach"))) == ["k3", "k4"]
    assert [i.key for i in store.search(("memories", user, "coach", "s1"))] == ["k4"]
    assert sorted(i.key for i in store.search(("memories", user), filter={"kind": "hobby"})) == ["k1", "k3", "k4"]
    assert sorted(i.key for i in store.search(("memories", user), filter={"year": {"$gte": 2021, "$lt": 2024}})) \
        == ["k1", "k3"]
    hits = store.search(("memories", user), query="food allergy", limit=2)
    assert hits[0].key == "k2" and hits[0].score is not None and len(hits) == 2
    assert [i.key for i in store.search(("memories", user), query="hiking mountains", filter={"kind": "hobby"},
                                        limit=1)] == ["k1"]
    assert len(store.search(("memories", user), limit=2, offset=3)) == 1

    namespaces = store.list_namespaces(prefix=("memories", user))
    assert namespaces == [("memories", user), ("memories", user, "coach"), ("memories", user, "coach", "s1")]
    assert store.list_namespaces(prefix=("memories", user), max_depth=2) == [("memories", user)]
    assert store.list_namespaces(prefix=("memories", "*", "coach"), suffix=("s1",)) == [("memories", user, "coach", "s1")]

    got, _, listed = store.batch([GetOp(("memories", user), "k1"), PutOp(("memories", user), "k1", None),
                                  SearchOp(("memories", user), limit=10)])
    assert got is not None and got.value["year"] == 2021
    assert sorted(i.key for i in listed) == ["k2", "k3", "k4"]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_async_batch(store: MemsvcStore) -> None:
    user = f"lg-{uuid.uuid4().hex[:6]}"
    await store.aput((("memories", user)), "a", {"x": 1})
    assert (await store.aget(("memories", user), "a")).value == {"x": 1}  # type: ignore[union-attr]
    assert [i.key for i in await store.asearch(("memories", user))] == ["a"]
    assert await store.alist_namespaces(prefix=("memories", user)) == [("memories", user)]
    await store.adelete(("memories", user), "a")
    assert await store.aget(("memories", user), "a") is None


def test_unmappable_namespaces_are_refused(store: MemsvcStore) -> None:
    for ns, msg in [(("memories",), "names no user"), (("other", "u"), "prefix"),
                    (("memories", "u", "a", "s", "deeper"), "deeper than memsvc's scopes"),
                    (("memories", "has space"), "without '/'")]:
        with pytest.raises(UnsupportedNamespace, match=msg):
            store.put(ns, "k", {"v": 1})
    with pytest.raises(UnsupportedNamespace, match="names no user"):
        store.search(("memories",), query="anything")
    with pytest.raises(ValueError):
        MemsvcStore()


def test_tenants_do_not_share_a_store(live: Live, store: MemsvcStore) -> None:
    user = f"lg-{uuid.uuid4().hex[:6]}"
    store.put(("memories", user), "secret", {"pin": "1234"})
    other = MemsvcStore(MemsvcClient(live.url, live.key_b), prefix=("memories",))
    assert other.get(("memories", user), "secret") is None
    assert other.search(("memories", user)) == []


class State(TypedDict):
    user: str
    fact: str
    recalled: str


def remember(state: State, *, store: BaseStore) -> dict[str, str]:
    store.put(("memories", state["user"]), "fact", {"text": state["fact"]})
    return {}


def recall(state: State, *, store: BaseStore) -> dict[str, str]:
    hits = store.search(("memories", state["user"]), query="what do we know?", limit=1)
    return {"recalled": hits[0].value["text"] if hits else ""}


def test_langgraph_graph_uses_memsvc_as_its_store(store: MemsvcStore) -> None:
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    app = graph.compile(store=store)
    user = f"lg-{uuid.uuid4().hex[:6]}"
    out = app.invoke({"user": user, "fact": "the user's favourite colour is teal", "recalled": ""})
    assert out["recalled"] == "the user's favourite colour is teal"
