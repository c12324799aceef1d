"""The Python SDK against a real `memsvc serve` on loopback: every v1 route, sync and async."""

from __future__ import annotations

import httpx
import pytest

from memsvc_client import (
    AsyncJob,
    AsyncMemsvcClient,
    Forbidden,
    InvalidInput,
    Job,
    MemsvcClient,
    NotFound,
    RateLimited,
    RetryPolicy,
    TransportError,
    Unauthenticated,
)
from memsvc_client._calls import Call, retry_after
from tests.clients.conftest import Live

TURNS = [
    {"id": "m1", "role": "user", "name": "Alice", "content": "I moved to Berlin in May 2023.",
     "timestamp": "2023-05-20T10:00:00Z"},
    {"id": "m2", "role": "user", "name": "Alice", "content": "My cat is called Miso.",
     "timestamp": "2023-05-20T10:01:00Z"},
]


def test_sync_client_covers_every_route(live: Live) -> None:
    with MemsvcClient(live.url, live.key_a) as c:
        assert c.healthz() == {"status": "ok"}
        assert c.readyz()["status"] == "ready"
        written = c.add("sdk-alice", TURNS, session_id="s1")
        assert written.skipped == []
        episodic = {w.source_ids[0]: w for w in written.written if w.type == "episodic"}
        assert sorted(episodic) == ["m1", "m2"]
        assert episodic["m1"].session_id == "s1"

        again = c.add("sdk-alice", TURNS)  # idempotent by message id
        assert again.written == [] and sorted(s.message_id for s in again.skipped) == ["m1", "m2"]

        res = c.search("sdk-alice", "Where does Alice live?", top_k=3)
        top = min(res.results, key=lambda r: r.rank)
        assert "Berlin" in top.content and top.source_ids == ["m1"] and top.score > 0
        assert "Berlin" in res.context

        page1 = c.list_memories("sdk-alice", types=["episodic"], limit=1)
        assert len(page1.items) == 1 and page1.next_cursor is not None
        page2 = c.list_memories("sdk-alice", types=["episodic"], limit=1, cursor=page1.next_cursor)
        assert {page1.items[0].id, page2.items[0].id} == {episodic["m1"].id, episodic["m2"].id}
        assert {m.id for m in c.iter_memories("sdk-alice", types=["episodic"], page_size=1)} == \
            {episodic["m1"].id, episodic["m2"].id}

        mid = episodic["m2"].id
        assert c.get(mid).content == episodic["m2"].content
        patched = c.update(mid, content="My cat is called Miso; she is grey.", importance=0.9)
        assert (patched.version, patched.importance) == (2, 0.9)
        hist = c.history(mid)
        assert [v.version for v in hist.versions] == [1, 2]
        assert [v.change for v in hist.versions] == ["create", "update"]
        assert hist.versions[0].memory["content"] == episodic["m2"].content

        fb = c.feedback("sdk-alice", "Where does Alice live?", [top.id], helpful=True)
        assert fb.recorded is True and fb.memory_ids == [top.id]
        assert [s["id"] for s in c.skills()] != []
        assert c.policies()["stats"]["users"] >= 1
        graph = c.graph("sdk-alice")
        assert any("Berlin" in e["name"] for e in graph.entities)

        deleted = c.delete(mid)
        assert deleted.id == mid and deleted.status != "active"
        purged = c.purge_user("sdk-alice")
        assert purged.user_id == "sdk-alice" and purged.deleted["memories"] >= 2
        assert c.list_memories("sdk-alice").items == []


def test_errors_carry_the_server_code_and_tenants_stay_apart(live: Live) -> None:
    with MemsvcClient(live.url, live.key_a) as a, MemsvcClient(live.url, live.key_b) as b, \
            MemsvcClient(live.url, live.key_a_ro) as ro, MemsvcClient(live.url, "msk_wrong") as bad:
        mid = a.add("sdk-bob", ["I like green tea."], infer=False).written[0].id
        with pytest.raises(NotFound) as err:
            b.get(mid)
        assert (err.value.status, err.value.code) == (404, "not_found")
        with pytest.raises(NotFound):
            b.delete(mid)
        assert b.search("sdk-bob", "tea").results == []
        with pytest.raises(Forbidden) as forb:
            ro.add("sdk-bob", ["I like coffee."])
        assert forb.value.code == "forbidden"
        assert ro.get(mid).content.endswith("I like green tea.")
        with pytest.raises(Unauthenticated) as unauth:
            bad.healthz() and bad.policies()
        assert unauth.value.code == "unauthenticated"
        with pytest.raises(InvalidInput) as inv:
            a.search("sdk-bob", "tea", top_k=999)
        assert inv.value.code == "invalid_input" and "top_k" in inv.value.message
        assert a.get(mid).version == 1  # nothing changed by the rejected calls
        a.purge_user("sdk-bob")


def test_wait_false_returns_a_job_handle(live: Live) -> None:
    with MemsvcClient(live.url, live.key_a) as c:
        job = c.add("sdk-carol", [{"id": "c1", "role": "user", "content": "I work as a nurse in Lyon."}], wait=False)
        assert isinstance(job, Job)
        result = job.result(timeout=60)
        assert [w.source_ids for w in result.written if w.type == "episodic"] == [["c1"]]
        assert c.job(job.id).state == "done"
        with pytest.raises(NotFound):
            MemsvcClient(live.url, live.key_b).job(job.id)
        c.purge_user("sdk-carol")


@pytest.mark.anyio
async def test_async_client_matches_the_sync_one(live: Live) -> None:
    async with AsyncMemsvcClient(live.url, live.key_a) as c:
        assert (await c.healthz()) == {"status": "ok"}
        job = await c.add("sdk-dan", [{"id": "d1", "role": "user", "content": "I run marathons in Oslo."}], wait=False)
        assert isinstance(job, AsyncJob)
        written = await job.result(timeout=60)
        mid = next(w.id for w in written.written if w.type == "episodic")
        res = await c.search("sdk-dan", "Which city does Dan run in?", token_budget=50)
        assert res.results[0].source_ids == ["d1"]
        assert [m.id async for m in c.iter_memories("sdk-dan", types=["episodic"])] == [mid]
        assert (await c.update(mid, importance=0.2)).version == 2
        assert len((await c.history(mid)).versions) == 2
        assert (await c.get(mid)).importance == 0.2
        assert (await c.delete(mid)).id == mid
        with pytest.raises(NotFound):
            await AsyncMemsvcClient(live.url, live.key_b).get(mid)
        assert (await c.purge_user("sdk-dan")).deleted["memories"] >= 1


# -- retries: httpx's own MockTransport stands in for a flaky network and a busy server ---------
def _counting(responses: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler), seen


FAST = RetryPolicy(max_retries=2, backoff=0.001)


def test_429_is_retried_honouring_retry_after_then_raised() -> None:
    busy = httpx.Response(429, headers={"Retry-After": "0"},
                          json={"error": {"code": "rate_limited", "message": "slow down"}})
    ok = httpx.Response(200, json={"status": "ok"})
    transport, seen = _counting([busy, ok])
    assert MemsvcClient("http://x", "k", transport=transport, retry=FAST).healthz() == {"status": "ok"}
    assert seen == ["GET /healthz", "GET /healthz"]

    transport, seen = _counting([busy])
    with pytest.raises(RateLimited) as err:
        MemsvcClient("http://x", "k", transport=transport, retry=FAST).feedback("u", "q", ["m"])
    assert err.value.code == "rate_limited" and len(seen) == 3  # POSTs too: a 429 changed nothing


def test_connection_errors_are_retried_only_when_safe() -> None:
    lost = httpx.ReadError("connection reset")
    transport, seen = _counting([lost])
    with pytest.raises(TransportError):
        MemsvcClient("http://x", "k", transport=transport, retry=FAST).get("m1")
    assert len(seen) == 3
    transport, seen = _counting([lost])
    with pytest.raises(TransportError):
        MemsvcClient("http://x", "k", transport=transport, retry=FAST).feedback("u", "q", ["m"])
    assert len(seen) == 1  # a feedback that may have landed is not sent twice
    transport, seen = _counting([lost])
    with pytest.raises(TransportError):  # messages without ids: a resend could write twice
        MemsvcClient("http://x", "k", transport=transport, retry=FAST).add("u", ["hello"])
    assert len(seen) == 1
    transport, seen = _counting([lost, httpx.Response(200, json={"written": [], "skipped": []})])
    MemsvcClient("http://x", "k", transport=transport, retry=FAST).add("u", [{"id": "x", "role": "user", "content": "hi"}])
    assert len(seen) == 2  # every message has an id: the server deduplicates a resend
    transport, seen = _counting([httpx.ConnectError("refused"), httpx.Response(200, json={"recorded": True, "memory_ids": []})])
    MemsvcClient("http://x", "k", transport=transport, retry=FAST).feedback("u", "q", [])
    assert len(seen) == 2  # nothing was sent: safe for any call


def test_unreachable_server_raises_transport_error() -> None:
    from tests.conftest import free_port

    c = MemsvcClient(f"http://127.0.0.1:{free_port()}", "k", retry=RetryPolicy(max_retries=1, backoff=0.001), timeout=2)
    with pytest.raises(TransportError):
        c.healthz()


def test_retry_policy_is_a_pure_function() -> None:
    call: Call[None] = Call("POST", "/v1/feedback", lambda r: None, idempotent=False)
    policy = RetryPolicy(max_retries=3, backoff=1.0, max_backoff=4.0)
    r503 = httpx.Response(503, headers={"Retry-After": "7"})
    assert policy.delay(0, call=call, response=r503) == 7.0
    assert policy.delay(3, call=call, response=r503) is None
    assert policy.delay(0, call=call, response=httpx.Response(500)) is None
    assert policy.delay(0, call=call, exc=httpx.ReadTimeout("t")) is None
    delay = policy.delay(2, call=call, exc=httpx.ConnectError("c"))
    assert delay is not None and 2.0 <= delay <= 4.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None
