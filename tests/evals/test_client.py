"""The REST client sends the contract's bodies with the bearer key."""

from __future__ import annotations

import json

import httpx
import pytest

from evals.client import MemoryClient, RestClient, RestClientError
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest


def test_rest_client_bodies_and_auth() -> None:
    seen: list[tuple[str, str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["authorization"], json.loads(request.content)))
        if request.url.path == "/v1/memories":
            return httpx.Response(200, json={"written": [{"id": "m1", "source_ids": ["D1:1"]}], "skipped": []})
        if request.url.path == "/v1/memories/search":
            return httpx.Response(200, json={"results": [{"id": "m1", "score": 1.0}], "context": "c"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    client = RestClient("http://memsvc.test/", "k-123", transport=httpx.MockTransport(handler))
    assert isinstance(client, MemoryClient)
    req = WriteRequest(user_id="u", messages=[MessageIn(id="D1:1", role="user", name="A", content="hi")])
    assert client.add(req).written[0]["id"] == "m1"
    assert client.search(SearchRequest(user_id="u", query="hi", top_k=5)).context == "c"
    (p1, auth, body), (p2, _, search) = seen
    assert (p1, p2, auth) == ("/v1/memories", "/v1/memories/search", "Bearer k-123")
    assert body["messages"] == [{"id": "D1:1", "role": "user", "name": "A", "content": "hi"}]
    assert body["wait"] is True and body["infer"] is True
    assert search == {"user_id": "u", "query": "hi", "top_k": 5, "explain": False, "include_archived": False}


def test_rest_client_raises_on_error_status() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(422, json={"error": {"code": "invalid"}}))
    client = RestClient("http://memsvc.test", "k", transport=transport)
    with pytest.raises(RestClientError, match="422"):
        client.search(SearchRequest(user_id="u", query="q"))
