"""A LangChain retriever over memsvc recall (extra `memsvc-client[langchain]`)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from memsvc_client import _calls as calls
from memsvc_client.client import AsyncMemsvcClient, MemsvcClient
from memsvc_client.models import MemoryType, SearchFilters, SearchHit, SearchResult

PROVENANCE = ("id", "type", "user_id", "agent_id", "session_id", "source_ids", "created_at", "event_time",
              "valid_from", "valid_to", "importance", "version", "status", "score", "rank")


class MemsvcRetriever(BaseRetriever):
    """Recall a user's memories as `Document`s, within `top_k` and `token_budget`.

    `page_content` is the memory; `metadata` carries its provenance: `id`, `source_ids`,
    `type`, times (`created_at`, `event_time`, `valid_from`, `valid_to` as ISO strings), `score`
    and `rank` (1 = best). Documents come in memsvc's reading order (strongest at both ends).
    Give `client` for `invoke`, `async_client` for `ainvoke` (either one serves both).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    user_id: str
    client: MemsvcClient | None = None
    async_client: AsyncMemsvcClient | None = None
    top_k: int = 10
    token_budget: int | None = None
    types: list[MemoryType] | None = None
    agent_id: str | None = None
    session_id: str | None = None
    preset: str | None = None

    def _call(self, query: str) -> calls.Call[SearchResult]:
        filters = SearchFilters(agent_id=self.agent_id, session_id=self.session_id) \
            if self.agent_id or self.session_id else None
        return calls.search(calls.search_request(
            self.user_id, query, top_k=self.top_k, token_budget=self.token_budget, types=self.types, as_of=None,
            time_range=None, filters=filters, explain=False, preset=self.preset))

    @staticmethod
    def to_document(hit: SearchHit) -> Document:
        data: dict[str, Any] = hit.model_dump(mode="json")
        meta = {k: data.get(k) for k in PROVENANCE}
        meta["metadata"] = data.get("metadata", {})
        return Document(page_content=hit.content, metadata=meta, id=hit.id)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.client is None:
            raise ValueError("MemsvcRetriever.invoke needs `client` (a MemsvcClient); use ainvoke with async_client")
        return [self.to_document(h) for h in self.client._run(self._call(query)).results]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        if self.async_client is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)  # sync client, in a thread
        return [self.to_document(h) for h in (await self.async_client._run(self._call(query))).results]
