"""A LangGraph agent whose long-term memory store is memsvc.

    MEMSVC_URL=http://127.0.0.1:8080 MEMSVC_API_KEY=msk_... python examples/langgraph_agent.py [user_id]

Two graph nodes share the store: `remember` keeps what the user states about themselves,
`answer` recalls from memsvc (the store's semantic search, and the retriever over everything
memsvc derived from the conversation) before replying. The reply is a template so the example
runs without a model; put your chat model in `answer` (any LangChain chat model).

Namespaces: `("memories", user_id)` — see memsvc_client.langgraph for the mapping.
"""

from __future__ import annotations

import sys
import uuid
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from memsvc_client import AsyncMemsvcClient, MemsvcClient
from memsvc_client.langchain import MemsvcRetriever
from memsvc_client.langgraph import MemsvcStore


class State(TypedDict):
    user_id: str
    message: str
    reply: str


def remember(state: State, *, store: BaseStore) -> dict[str, str]:
    text = state["message"]
    if text.lower().startswith(("i ", "my ", "i'm")):  # what the user says about themselves
        store.put(("memories", state["user_id"]), uuid.uuid4().hex[:12], {"text": text})
    return {}


def answer(state: State, *, store: BaseStore) -> dict[str, str]:
    items = store.search(("memories", state["user_id"]), query=state["message"], limit=3)
    known = "; ".join(i.value["text"] for i in items) or "nothing yet"
    return {"reply": f"(what I remember: {known})"}


def build(store: MemsvcStore):  # type: ignore[no-untyped-def]
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("answer", answer)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "answer")
    graph.add_edge("answer", END)
    return graph.compile(store=store)


def main(user: str) -> None:
    client = MemsvcClient()  # MEMSVC_URL / MEMSVC_API_KEY
    agent = build(MemsvcStore(client, AsyncMemsvcClient(), prefix=("memories",)))
    for message in ["I live in Lisbon and I teach chemistry.", "My sister is called Ana.", "Where do I live?"]:
        out = agent.invoke({"user_id": user, "message": message, "reply": ""})
        print(f"user: {message}\nagent: {out['reply']}")
    docs = MemsvcRetriever(client=client, user_id=user, top_k=2, token_budget=200).invoke("family")
    print("retriever:", [(d.page_content, d.metadata["source_ids"]) for d in docs])
    client.purge_user(user)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "example-bob")
