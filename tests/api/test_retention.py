"""Retention under budget with real stores and the real job runner: the budget holds under a write
stream with nothing lost, archived memories are searchable on request, restorable and purgeable."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from api.app import create_app
from api.auth import create_key
from memsvc.config import RedisJobs, RetentionConfig, Settings
from memsvc.lifecycle.sweep import SWEEP_JOB
from memsvc.memory_os import MemoryOS
from memsvc.models import RETENTION_KEY, MemoryStatus
from memsvc.ports import MemoryQuery
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.conftest import reset_postgres
from tests.jobs.conftest import REDIS_URL, redis_or_skip

BUDGET = 6
TENANT = "tenant-r"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service),
                        pytest.param("redis", marks=pytest.mark.service)])
def retained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryOS]:
    """A MemoryOS with a per-user budget of 6 active memories (the importance policy, so that the
    outcome does not depend on a trained artefact), sweeping every 0.3 s: on SQLite with the in-process
    queue, on PostgreSQL, and on SQLite with the Redis queue."""
    retention = RetentionConfig(policy="importance", max_active_per_user=BUDGET, interval_s=0.3, trigger_s=0.2)
    if request.param == "postgresql":
        url = reset_postgres(request.getfixturevalue("postgres_url"))
        settings = make_settings(tmp_path, records="postgresql", vectors="qdrant-local", pg_url=url)
    else:
        settings = make_settings(tmp_path)
    settings = settings.model_copy(update={"retention": retention})
    stream = None
    if request.param == "redis":
        redis_or_skip()
        stream = f"memsvc-test:{uuid.uuid4().hex[:12]}"
        settings = settings.model_copy(update={"jobs": RedisJobs(url=REDIS_URL, stream=stream, workers=2)})
    os_ = build_memory_os(settings)
    yield os_
    os_.close()
    if stream is not None:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(stream)


def turns(user: str, start: int, n: int) -> WriteRequest:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    texts = ["I adopted a cat called Miso from the Berlin shelter.", "ok", "My sister Ana is a nurse in Porto.",
             "lol", "I ran the Berlin marathon in 3 hours 41 minutes.", "sure"]
    return WriteRequest(user_id=user, infer=False, messages=[
        MessageIn(id=f"{user}-{i}", role="user", content=f"{texts[i % len(texts)]} (note {i})",
                  timestamp=t0 + timedelta(minutes=i)) for i in range(start, start + n)])


def counting_second(os_: MemoryOS) -> list[str]:
    """Wrap the retention sweep's e5 engine so that every text it embeds from now on is listed in the
    returned list (the engine still embeds them)."""
    engine = os_.retention.second
    assert engine is not None
    embedded: list[str] = []

    def counting(texts: Sequence[str]) -> np.ndarray:
        embedded.extend(texts)
        return engine(texts)

    os_.retention.second = counting
    return embedded


def statuses(os_: MemoryOS, ids: list[str]) -> dict[str, MemoryStatus]:
    return {c.id: c.status for c in os_.records.get_memories(TENANT, ids)}


def settle(os_: MemoryOS, user: str) -> None:
    """Wait for the sweeps to catch up (the budget holds eventually, not inside a write)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os_.jobs.wait_idle(10, kind=SWEEP_JOB) and \
                os_.records.count_status(TENANT, MemoryStatus.ACTIVE, user) <= BUDGET:
            return
        time.sleep(0.1)
    raise AssertionError("the budget did not hold within 30 s")


def test_budget_holds_under_a_write_stream_and_nothing_is_lost(retained: MemoryOS) -> None:
    os_ = retained
    written: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(user: str, k: int) -> None:
        try:
            for r in range(5):
                res = os_.add(TENANT, turns(user, k * 100 + r * 4, 4))
                with lock:
                    written.extend(m["id"] for m in res.written)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(user, k)) for k, user in enumerate(["u1", "u1", "u2"])]
    peak = 0
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        peak = max(peak, os_.records.count_status(TENANT, MemoryStatus.ACTIVE, "u1"))
        time.sleep(0.05)
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(written) == 3 * 5 * 4
    for user in ("u1", "u2"):
        settle(os_, user)
        assert os_.records.count_status(TENANT, MemoryStatus.ACTIVE, user) == BUDGET
    seen = statuses(os_, written)
    assert sorted(seen) == sorted(written)  # nothing lost: every acknowledged memory is still there
    assert {s for s in seen.values()} == {MemoryStatus.ACTIVE, MemoryStatus.ARCHIVED}
    # the scopes may hold memories no write returned (an episode digest of the consolidation job):
    # they count against the budget too, so the written ones active are at most the budget
    every = [c for user in ("u1", "u2")
             for c in os_.records.list_memories(TENANT, MemoryQuery(user_id=user, limit=500)).items]
    assert sum(c.status is MemoryStatus.ACTIVE for c in every) == 2 * BUDGET
    assert sum(s is MemoryStatus.ARCHIVED for s in seen.values()) >= len(written) - 2 * BUDGET
    archived = [i for i, s in seen.items() if s is MemoryStatus.ARCHIVED]
    cube = os_.records.get_memory(TENANT, archived[0])
    assert cube is not None and cube.metadata[RETENTION_KEY]["policy"] == "importance"
    assert cube.metadata[RETENTION_KEY]["budget"] == f"user:{BUDGET}"
    last = os_.records.history(TENANT, cube.id)[-1]
    assert (last.change.value, last.actor) == ("archive", SWEEP_JOB)
    # the importance policy kept the most important memories: no phatic "ok"/"lol"/"sure" survives
    kept = [c for c in os_.records.get_memories(TENANT, written) if c.status is MemoryStatus.ACTIVE]
    assert all(not c.content.startswith(("ok", "lol", "sure")) for c in kept)


@pytest.fixture
async def client(retained: MemoryOS) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, MemoryOS]]:
    """Two tenants' clients over the ASGI app."""
    app = create_app(memory_os=retained)
    transport = httpx.ASGITransport(app=app)
    key = create_key(retained.records, TENANT)[1]
    other = create_key(retained.records, "tenant-other")[1]
    async with httpx.AsyncClient(transport=transport, base_url="http://memsvc",
                                 headers={"Authorization": f"Bearer {key}"}) as a, \
            httpx.AsyncClient(transport=transport, base_url="http://memsvc",
                              headers={"Authorization": f"Bearer {other}"}) as b:
        yield a, b, retained


@pytest.mark.anyio
async def test_archived_memories_are_searchable_on_request_restorable_and_purgeable(
        client: tuple[httpx.AsyncClient, httpx.AsyncClient, MemoryOS]) -> None:
    api, other, os_ = client
    for start in range(0, 24, 6):
        r = await api.post("/v1/memories", json=turns("alice", start, 6).model_dump(mode="json"))
        assert r.status_code == 200, r.text
    await asyncio.to_thread(settle, os_, "alice")
    archived = (await api.get("/v1/memories", params={"user_id": "alice", "status": "archived", "limit": 100})).json()["items"]
    active = (await api.get("/v1/memories", params={"user_id": "alice", "status": "active", "limit": 100})).json()["items"]
    assert len(active) == BUDGET  # episode digests of the consolidation job count against the budget too
    assert len(archived) >= 24 - BUDGET
    target = next(m for m in archived if "Porto" in m["content"])
    query = {"user_id": "alice", "query": target["content"], "top_k": 50}
    default = (await api.post("/v1/memories/search", json=query)).json()["results"]
    assert target["id"] not in [m["id"] for m in default]
    assert all(m["status"] == "active" for m in default)
    wide = (await api.post("/v1/memories/search", json={**query, "include_archived": True})).json()["results"]
    assert target["id"] in [m["id"] for m in wide]
    # another tenant sees nothing, archived or not
    assert (await other.post("/v1/memories/search", json={**query, "include_archived": True})).json()["results"] == []
    # bad input: a clear 422, nothing changes
    bad = await api.post("/v1/memories/search", json={**query, "include_archived": "sometimes"})
    assert bad.status_code == 422 and bad.json()["error"]["code"]
    # restore: active again, the retention note gone, and default search finds it
    r = await api.patch(f"/v1/memories/{target['id']}", json={"status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "active" and RETENTION_KEY not in r.json()["metadata"]
    versions = (await api.get(f"/v1/memories/{target['id']}/history")).json()["versions"]
    assert [v["change"] for v in versions][-2:] == ["archive", "restore"]
    assert target["id"] in [m["id"] for m in (await api.post("/v1/memories/search", json=query)).json()["results"]]
    # statistics
    policies = (await api.get("/v1/policies")).json()["retention"]
    assert policies["kind"] == "importance" and policies["budgets"]["max_active_per_user"] == BUDGET
    assert policies["archived"] == len(archived) - 1 and policies["active"] == BUDGET + 1
    metrics = (await api.get("/metrics")).text
    assert 'memsvc_memories{status="archived"}' in metrics and "memsvc_retention_sweep_seconds_count" in metrics
    # purge removes archived memories too
    assert (await api.delete("/v1/users/alice")).status_code == 200
    assert os_.records.count_status(TENANT, MemoryStatus.ARCHIVED, "alice") == 0
    listed = await api.get("/v1/memories", params={"user_id": "alice", "status": "archived"})
    assert listed.json()["items"] == []


def test_bad_retention_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="policy"):
        Settings(retention={"policy": "random"})  # evaluation only
    with pytest.raises(ValidationError, match="max_active_per_user"):
        Settings(retention={"max_active_per_user": -1})
    with pytest.raises(ValidationError, match="interval_s"):
        Settings(retention={"interval_s": 0})
    missing = tmp_path / "no-model"
    settings = make_settings(tmp_path).model_copy(update={"retention": RetentionConfig(policy="learned", model_path=missing)})
    with pytest.raises(ValueError, match="MEMSVC_RETENTION__MODEL_PATH"):
        build_memory_os(settings, start=False)


def test_learned_model_runs_only_with_the_embedder_it_was_trained_on(tmp_path: Path) -> None:
    """The evidence head reads the service's vectors: another embedder's vectors would be read as
    MiniLM's. The packaged model is then not used (importance ranks); configured explicitly, it is refused."""
    from memsvc.config import OpenAIEmbedder
    from memsvc.learn import retention as artefact
    from memsvc.memory_os import _retention_model
    from storage.embedders import OpenAIEmbeddings

    other = OpenAIEmbeddings(OpenAIEmbedder(base_url="http://127.0.0.1:9/v1", model="text-embedding-3-small", dim=384))
    settings = make_settings(tmp_path).model_copy(update={"retention": RetentionConfig(policy="learned")})
    assert _retention_model(settings, other) == (None, None, None)
    explicit = settings.model_copy(update={"retention": RetentionConfig(policy="learned", model_path=artefact.PACKAGED)})
    with pytest.raises(ValueError, match="trained on all-MiniLM-L6-v2 embeddings"):
        _retention_model(explicit, other)
    from storage.registry import build_embedder

    model, info, second = _retention_model(explicit, build_embedder(settings))
    assert model is not None and info is not None and info["loaded"]
    assert (second is not None) == bool(model.second_dim)  # the e5 engine the evidence head reads, started lazily


def test_no_budget_archives_nothing(tmp_path: Path) -> None:
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        ids = [m["id"] for m in os_.add(TENANT, turns("bob", 0, 12)).written]
        assert os_.retention.enabled is False
        assert os_.jobs.wait_idle(10)
        assert set(statuses(os_, ids).values()) == {MemoryStatus.ACTIVE}
        report = os_.policies(TENANT)["retention"]
        assert report["budgets"] == {"max_active_per_user": None, "max_active_per_tenant": None}
        active = os_.records.count_status(TENANT, MemoryStatus.ACTIVE)  # the 12 turns and an episode digest
        assert active >= 12 and (report["active"], report["archived"], report["ranking"]) == (active, 0, "none")
    finally:
        os_.close()


def test_learned_policy_runs_the_packaged_model_and_keeps_its_guarantee(tmp_path: Path) -> None:
    retention = RetentionConfig(policy="learned", max_active_per_user=BUDGET, interval_s=3600, protect=0.5)
    os_ = build_memory_os(make_settings(tmp_path).model_copy(update={"retention": retention}))
    try:
        # written without the budget check, so that the one sweep below decides everything
        ids = [m["id"] for start in range(0, 30, 6) for m in os_.writer.write(TENANT, turns("carol", start, 6)).written]
        os_.lifecycle.settle(TENANT)  # the consolidation job's episode digests exist before the sweep
        # a recall after the last write is the most recent use: the guarantee keeps it
        hit = os_.search(TENANT, SearchRequest(user_id="carol", query="Porto nurse sister", top_k=1)).results[0]["id"]
        os_.recall_log.flush()
        assert hit not in ids[-3:]
        job = os_.jobs.submit(TENANT, SWEEP_JOB, {"user_id": "carol"})
        assert os_.jobs.wait_idle(30, kind=SWEEP_JOB)
        result = os_.records.get_job(TENANT, job.id)
        assert result is not None and result.result is not None
        every = os_.records.list_memories(TENANT, MemoryQuery(user_id="carol", limit=500)).items
        assert (result.result["archived"], result.result["policy"]) == (len(every) - BUDGET, "learned")
        report = os_.policies(TENANT)["retention"]
        assert (report["kind"], report["ranking"]) == ("learned", "learned")
        assert report["model"]["name"] == "memsvc-retention" and report["model"]["metrics"]
        from memsvc.learn import retention as artefact

        # which of the model's two orders it runs, as its manifest says (the one its cross-validation chose)
        manifest = artefact.read_manifest(artefact.PACKAGED)
        assert report["model"]["ranker"] == manifest.config.get("ranker", "head")
        # its evidence head reads e5 rows too: the sweep embedded each memory version of the scope once
        assert report["model"]["second_embedder"] == manifest.heads["retention"]["second_embedder"]
        assert manifest.heads["retention"]["second_dim"] == 384
        cached = os_.retention._seconds
        assert {k for k, _ in cached} == {c.id for c in every} and len(cached) == len(every)
        rows = np.stack(list(cached.values()))
        assert rows.shape == (len(every), 384) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)
        seen = statuses(os_, [c.id for c in every])
        assert sum(s is MemoryStatus.ACTIVE for s in seen.values()) == BUDGET
        # protect 0.5 of a budget of 6: the 3 newest and the 3 most recently used are never archived
        newest = sorted(every, key=lambda c: (c.created_at, c.event_time or c.created_at))[-3:]
        assert all(seen[c.id] is MemoryStatus.ACTIVE for c in newest)
        assert seen[hit] is MemoryStatus.ACTIVE
        # the next sweep embeds only the texts it has not met: archiving changed versions, not texts
        embedded = counting_second(os_)
        new = [m["id"] for m in os_.writer.write(TENANT, turns("carol", 30, 2)).written]
        os_.lifecycle.settle(TENANT)
        again = os_.jobs.submit(TENANT, SWEEP_JOB, {"user_id": "carol"})
        assert os_.jobs.wait_idle(30, kind=SWEEP_JOB)
        done = os_.records.get_job(TENANT, again.id)
        assert done is not None and done.result is not None and done.result["archived"] >= len(new)
        fresh = {c.content for c in os_.records.get_memories(TENANT, new)}
        assert fresh <= set(embedded) and not set(embedded) & {c.content for c in every}
    finally:
        os_.close()


def test_a_sweep_reads_current_vectors_from_the_index_and_embeds_only_stale_ones(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the sweep's cache is empty: it reads the scope's vectors back from the index
    instead of running the embedder over every memory, except where the stored vector embeds an
    earlier text than the memory's (its digest differs); with the index down it embeds them all."""
    settings = make_settings(tmp_path)
    first = build_memory_os(settings)
    try:
        first.writer.write(TENANT, turns("dora", 0, 12))
        first.lifecycle.settle(TENANT)  # the episode digest too
        first.outbox.drain()
    finally:
        first.close()
    os_ = build_memory_os(settings)
    try:
        cubes = sorted(os_.records.iter_memories(TENANT, "dora"), key=lambda c: c.content)
        assert len(cubes) >= 12
        embedded: list[str] = []
        real = os_.indexer.embedder.embed

        def counting(texts: list[str]) -> object:
            embedded.extend(texts)
            return real(texts)

        monkeypatch.setattr(os_.indexer.embedder, "embed", counting)
        stale = cubes[0].model_copy(update={"content": "I moved from Berlin to Lisbon in March."})
        got = os_.retention.vectors_of([stale, *cubes[1:]])
        assert embedded == [stale.content]
        expected = real([stale.content, *(c.content for c in cubes[1:])])
        # the same vectors up to the batch the model saw them in (its bf16 kernels are not batch-invariant)
        assert got.shape == expected.shape and (got * expected).sum(1).min() > 0.999
        # with the index unavailable the sweep does not fail: it embeds what it cannot read back
        os_.vectors.close()
        embedded.clear()
        again = os_.retention.vectors_of(cubes)
        assert embedded == [c.content for c in cubes]
        assert again.shape == got.shape and (again[1:] * got[1:]).sum(1).min() > 0.999
    finally:
        os_.close()


def test_e5_rows_outlive_a_restart_in_sql_and_a_purge_deletes_them(tmp_path: Path) -> None:
    """The second embedding costs ~30 ms a text: a sweep stores each row with the scope (SQL,
    `name_vectors`, keyed by a hash of model and text) so that a restarted node, or another node,
    reads it back instead of embedding the scope again; deleting the user deletes the rows."""
    from memsvc.lifecycle.sweep import SECOND_KEY
    from storage.sql.name_vectors import SqlNameVectors

    retention = RetentionConfig(policy="learned", max_active_per_user=BUDGET, interval_s=3600)
    settings = make_settings(tmp_path).model_copy(update={"retention": retention})
    first = build_memory_os(settings)
    try:
        first.writer.write(TENANT, turns("finn", 0, 10))
        first.lifecycle.settle(TENANT)
        assert first.retention.second is not None
        first.jobs.submit(TENANT, SWEEP_JOB, {"user_id": "finn"})
        assert first.jobs.wait_idle(30, kind=SWEEP_JOB)
        texts = [c.content for c in first.records.iter_memories(TENANT, "finn")]
        stored = SqlNameVectors(first.records.engine).get(TENANT, "finn", SECOND_KEY, texts)  # type: ignore[attr-defined]
        assert set(stored) == set(texts)
        cached = np.stack(list(first.retention._seconds.values()))
        assert np.allclose(np.sort((cached @ np.stack(list(stored.values())).T).max(1)), 1.0, atol=1e-5)
    finally:
        first.close()
    os_ = build_memory_os(settings)
    try:
        embedded = counting_second(os_)
        scope = os_.retention._scope(TENANT, "finn")
        scores, _, _ = os_.retention.rank(scope)  # what the next sweep ranks, from the stored rows alone
        assert embedded == [] and len(scores) == len(scope) and np.isfinite(scores).all()
        rows = SqlNameVectors(os_.records.engine)  # type: ignore[attr-defined]
        os_.purge_user(TENANT, "finn")
        assert rows.get(TENANT, "finn", SECOND_KEY, texts) == {}
    finally:
        os_.close()


def test_a_sweep_cut_short_while_embedding_resumes_from_the_rows_it_stored(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The e5 rows are stored a chunk at a time: a sweep that dies mid-way (here: the engine fails on
    its second chunk) leaves the first chunk's rows, and the next sweep embeds only the rest."""
    from memsvc.lifecycle import sweep as sweep_module
    from storage.sql.name_vectors import SqlNameVectors

    monkeypatch.setattr(sweep_module, "SECOND_CHUNK", 4)
    retention = RetentionConfig(policy="learned", max_active_per_user=BUDGET, interval_s=3600)
    os_ = build_memory_os(make_settings(tmp_path).model_copy(update={"retention": retention}))
    try:
        os_.writer.write(TENANT, turns("gus", 0, 10))
        os_.lifecycle.settle(TENANT)
        engine = os_.retention.second
        assert engine is not None
        calls: list[list[str]] = []

        def dies_on_the_second_chunk(batch: Sequence[str]) -> np.ndarray:
            calls.append(list(batch))
            if len(calls) == 2:
                raise RuntimeError("node killed mid-sweep")
            return engine(batch)

        os_.retention.second = dies_on_the_second_chunk
        scope = os_.retention._scope(TENANT, "gus")
        texts = list(dict.fromkeys(c.content for c in scope))
        assert len(texts) > 8
        with pytest.raises(RuntimeError):
            os_.retention.rank(scope)
        rows = SqlNameVectors(os_.records.engine)  # type: ignore[attr-defined]
        first = calls[0]
        assert len(first) == 4 and set(rows.get(TENANT, "gus", sweep_module.SECOND_KEY, texts)) == set(first)
        os_.retention.second = engine
        embedded = counting_second(os_)
        scores, _, _ = os_.retention.rank(scope)
        assert sorted(embedded) == sorted(set(texts) - set(first))
        assert os_.retention._second_for([]).shape == (0, 384)  # an empty scope has rows of the model's width
        assert len(scores) == len(scope) and np.isfinite(scores).all()
        assert set(rows.get(TENANT, "gus", sweep_module.SECOND_KEY, texts)) == set(texts)
    finally:
        os_.close()


def test_tenant_budget_holds_across_users(tmp_path: Path) -> None:
    retention = RetentionConfig(policy="fifo", max_active_per_tenant=5, interval_s=0.3, trigger_s=0.2)
    os_ = build_memory_os(make_settings(tmp_path).model_copy(update={"retention": retention}))
    try:
        ids = [m["id"] for user in ("dan", "eve") for m in os_.add(TENANT, turns(user, 0, 6)).written]
        deadline = time.monotonic() + 30
        while os_.records.count_status(TENANT, MemoryStatus.ACTIVE) > 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os_.jobs.wait_idle(10, kind=SWEEP_JOB)
        seen = statuses(os_, ids)
        assert sorted(seen) == sorted(ids)
        assert sum(s is MemoryStatus.ACTIVE for s in seen.values()) == 5
        # fifo within each user: whatever a user keeps is that user's newest
        for user in ("dan", "eve"):
            mine = [seen[i] for i in ids if os_.records.get_memory(TENANT, i).user_id == user]  # type: ignore[union-attr]
            kept = [k for k, s in enumerate(mine) if s is MemoryStatus.ACTIVE]
            assert kept == list(range(len(mine) - len(kept), len(mine)))
        archived = os_.records.get_memory(TENANT, next(i for i in ids if seen[i] is MemoryStatus.ARCHIVED))
        assert archived is not None and archived.metadata[RETENTION_KEY]["budget"] == "tenant:5"
    finally:
        os_.close()
