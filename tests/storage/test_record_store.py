"""Contract tests of `SqlRecordStore` on SQLite and PostgreSQL (real databases)."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from memsvc.errors import Conflict, InvalidInput, NotFound
from memsvc.models import (
    ApiKey,
    ChangeKind,
    Episode,
    EpisodeState,
    EventLog,
    Job,
    JobState,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    OutboxEntry,
    OutboxOp,
    Role,
    StoredMessage,
    utcnow,
)
from memsvc.ports import MemoryQuery
from storage.sql import SqlRecordStore, records
from storage.sql import schema as t
from tests.storage.test_migrations import HEAD

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def cube(i: int = 0, *, tenant: str = "acme", user_id: str = "alice", **kw: object) -> MemoryCube:
    fields: dict[str, object] = {
        "id": f"m{i:03d}", "tenant": tenant, "user_id": user_id, "type": MemoryType.SEMANTIC,
        "content": f"fact number {i}", "created_at": T0 + timedelta(minutes=i),
        "updated_at": T0 + timedelta(minutes=i),
    }
    fields.update(kw)
    return MemoryCube.model_validate(fields)


def insert(store: SqlRecordStore, *cubes: MemoryCube) -> None:
    with store.unit_of_work() as uow:
        uow.insert_memories(cubes)


def message(i: int, *, tenant: str = "acme", user_id: str = "alice") -> StoredMessage:
    return StoredMessage(
        tenant=tenant, user_id=user_id, id=f"msg{i}", role=Role.USER, content=f"hello {i}",
        created_at=T0 + timedelta(seconds=i),
    )


def ids(items: list[MemoryCube]) -> list[str]:
    return [c.id for c in items]


def test_cube_round_trip_keeps_every_field(record_store: SqlRecordStore) -> None:
    cest = timezone(timedelta(hours=2))
    original = MemoryCube(
        id="3f1c2a9e-0000-4000-8000-000000000001", tenant="acme", user_id="alice", agent_id="agent-7",
        session_id="s-1", type=MemoryType.REFINED, content="Alice moved to Berlin in May 2023 — Grüße",
        source_ids=["msg1", "msg2"],
        created_at=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=cest),
        updated_at=datetime(2024, 5, 2, 9, 30, 1, 1, tzinfo=UTC),
        event_time=datetime(2023, 5, 15, 0, 0, tzinfo=UTC),
        valid_from=datetime(2023, 5, 1, tzinfo=UTC), valid_to=datetime(2030, 1, 1, tzinfo=UTC),
        importance=0.8125, version=4, status=MemoryStatus.SUPERSEDED,
        metadata={"topic": "home", "score": 0.1, "n": 3, "tags": ["a", "b"], "nested": {"ok": True, "x": None}},
        embedding_model="all-MiniLM-L6-v2", access_count=5,
        last_accessed_at=datetime(2024, 6, 1, 8, 0, 0, 999999, tzinfo=UTC),
        superseded_by="m-new", written_by="skill:extract-facts",
    )
    insert(record_store, original)

    loaded = record_store.get_memory("acme", original.id)
    assert loaded == original
    assert loaded.model_dump(mode="json")["created_at"] == "2024-05-01T12:00:00.123456Z"
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert record_store.get_memories("acme", [original.id]) == [original]
    assert list(record_store.iter_memories("acme", "alice")) == [original]


def test_unit_of_work_rolls_back_on_exception(record_store: SqlRecordStore) -> None:
    entry = OutboxEntry(tenant="acme", op=OutboxOp.UPSERT_VECTORS, payload={"ids": ["m001"]})
    with pytest.raises(RuntimeError), record_store.unit_of_work() as uow:
        uow.add_messages([message(1)])
        uow.insert_memories([cube(1)])
        uow.enqueue([entry])
        uow.log([EventLog(tenant="acme", user_id="alice", kind="write", payload={})])
        raise RuntimeError("boom")

    assert record_store.get_memory("acme", "m001") is None
    assert record_store.known_message_ids("acme", "alice", ["msg1"]) == set()
    assert record_store.pending_outbox() == []
    assert record_store.events("acme").items == []
    assert record_store.history("acme", "m001") == []
    assert entry.id is None
    with pytest.raises(RuntimeError):
        uow.insert_memories([cube(2)])  # a finished unit of work takes nothing more


def test_unit_of_work_is_one_transaction(record_store: SqlRecordStore) -> None:
    insert(record_store, cube(1))
    with pytest.raises(Conflict), record_store.unit_of_work() as uow:
        uow.add_messages([message(1)])
        uow.insert_memories([cube(2)])
        uow.enqueue([OutboxEntry(tenant="acme", op=OutboxOp.UPSERT_VECTORS, payload={})])
        uow.insert_memories([cube(1)])  # duplicate id: the whole flush fails

    assert record_store.get_memory("acme", "m002") is None
    assert record_store.known_message_ids("acme", "alice", ["msg1"]) == set()
    assert record_store.pending_outbox() == []
    assert [v.version for v in record_store.history("acme", "m001")] == [1]


def test_unit_of_work_captures_values_when_staged(record_store: SqlRecordStore) -> None:
    c = cube(1)
    with record_store.unit_of_work() as uow:
        uow.insert_memories([c])
        c.content = "changed after staging"
    assert record_store.get_memory("acme", "m001").content == "fact number 1"


def test_versions_after_insert_and_two_saves(record_store: SqlRecordStore) -> None:
    c = cube(1)
    with record_store.unit_of_work() as uow:
        uow.insert_memories([c], actor="writer")
    c1 = c.model_copy(update={"content": "fact v2", "version": 2, "updated_at": T0 + timedelta(hours=1)})
    with record_store.unit_of_work() as uow:
        uow.save_memory(c1, ChangeKind.UPDATE, actor="alice")
    c2 = c1.model_copy(update={"status": MemoryStatus.SUPERSEDED, "superseded_by": "m009", "version": 3})
    with record_store.unit_of_work() as uow:
        uow.save_memory(c2, ChangeKind.SUPERSEDE)

    assert record_store.get_memory("acme", "m001") == c2
    history = record_store.history("acme", "m001")
    assert [v.version for v in history] == [1, 2, 3]
    assert [v.change for v in history] == [ChangeKind.CREATE, ChangeKind.UPDATE, ChangeKind.SUPERSEDE]
    assert [v.actor for v in history] == ["writer", "alice", None]
    assert [v.snapshot["content"] for v in history] == ["fact number 1", "fact v2", "fact v2"]
    assert history[0].snapshot == c.model_dump(mode="json")
    assert history[2].snapshot == c2.model_dump(mode="json")
    assert MemoryCube.model_validate(history[1].snapshot) == c1
    assert all(v.changed_at.tzinfo is not None for v in history)


def test_save_memory_rejects_stale_or_missing_cubes(record_store: SqlRecordStore) -> None:
    c = cube(1)
    insert(record_store, c)
    with pytest.raises(Conflict), record_store.unit_of_work() as uow:
        uow.save_memory(c.model_copy(update={"content": "same version"}), ChangeKind.UPDATE)
    with pytest.raises(NotFound), record_store.unit_of_work() as uow:
        uow.save_memory(cube(2, version=2), ChangeKind.UPDATE)
    with pytest.raises(NotFound), record_store.unit_of_work() as uow:  # another tenant's id
        uow.save_memory(cube(1, tenant="other", version=2), ChangeKind.UPDATE)
    assert record_store.get_memory("acme", "m001") == c
    assert record_store.get_memory("other", "m001") is None


def test_list_memories_pages_newest_first(record_store: SqlRecordStore) -> None:
    cubes = [cube(i) for i in range(7)]
    # two cubes share created_at: id breaks the tie (descending)
    cubes += [cube(7, id="m007a", created_at=T0 + timedelta(minutes=3)), cube(8, id="m007b", created_at=T0 + timedelta(minutes=3))]
    insert(record_store, *cubes)
    expected = ["m006", "m005", "m004", "m007b", "m007a", "m003", "m002", "m001", "m000"]

    seen: list[list[str]] = []
    cursor = None
    while True:
        page = record_store.list_memories("acme", MemoryQuery(limit=4, cursor=cursor))
        seen.append(ids(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [expected[:4], expected[4:8], expected[8:]]

    exact = record_store.list_memories("acme", MemoryQuery(limit=9))
    assert ids(exact.items) == expected
    assert exact.next_cursor is None


def test_list_memories_filters(record_store: SqlRecordStore) -> None:
    insert(
        record_store,
        cube(0, content="I moved to BERLIN in May"),
        cube(1, content="Über den Wolken", type=MemoryType.EPISODIC),
        cube(2, content="progress: 100% done_ok", status=MemoryStatus.ARCHIVED),
        cube(3, content="progress: 1000 doneXok", type=MemoryType.PROCEDURAL),
        cube(4, content="bob's berlin flat", user_id="bob"),
        cube(5, content="deleted berlin", status=MemoryStatus.DELETED),
    )

    def listed(**kw: object) -> list[str]:
        return ids(record_store.list_memories("acme", MemoryQuery.model_validate(kw)).items)

    assert listed(user_id="bob") == ["m004"]
    assert listed(user_id="carol") == []
    assert listed(types=["episodic", "procedural"]) == ["m003", "m001"]
    assert listed(types=[]) == []
    assert listed(statuses=["archived", "deleted"]) == ["m005", "m002"]
    assert listed(text="berlin") == ["m005", "m004", "m000"]
    assert listed(text="berlin", user_id="alice", statuses=["active"]) == ["m000"]
    assert listed(text="über") == ["m001"]
    assert listed(text="ÜBER DEN") == ["m001"]
    assert listed(text="100%") == ["m002"]
    assert listed(text="done_ok") == ["m002"]
    assert listed(text="%") == ["m002"]
    assert listed(text="_") == ["m002"]
    assert listed(text="nothing like this") == []
    assert listed(created_from=T0 + timedelta(minutes=2)) == ["m005", "m004", "m003", "m002"]
    assert listed(created_to=T0 + timedelta(minutes=2)) == ["m001", "m000"]
    assert listed(
        created_from=T0 + timedelta(minutes=1), created_to=(T0 + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-5)))
    ) == ["m002", "m001"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!!",
        "e30",  # {}
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'["2024-05-01T12:00:00", "m001"]').decode(),  # naive time
        base64.urlsafe_b64encode(b'["yesterday", "m001"]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_list_memories_rejects_bad_cursors(record_store: SqlRecordStore, cursor: str) -> None:
    with pytest.raises(InvalidInput):
        record_store.list_memories("acme", MemoryQuery(cursor=cursor))
    with pytest.raises(InvalidInput):
        record_store.events("acme", cursor=cursor)


def test_list_memories_rejects_non_positive_limit(record_store: SqlRecordStore) -> None:
    with pytest.raises(InvalidInput):
        record_store.list_memories("acme", MemoryQuery(limit=0))


def test_get_memories_keeps_order_and_skips_unknown(record_store: SqlRecordStore) -> None:
    insert(record_store, cube(1), cube(2), cube(3), cube(4, tenant="other"))
    got = record_store.get_memories("acme", ["m003", "missing", "m001", "m004", "m003", "m002"])
    assert ids(got) == ["m003", "m001", "m002"]
    assert record_store.get_memories("acme", []) == []


def test_iter_memories_walks_all_batches(record_store: SqlRecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CHUNK", 2)
    insert(record_store, *[cube(i) for i in range(5)], cube(9, user_id="bob"), cube(10, tenant="other"))
    assert ids(list(record_store.iter_memories("acme", "alice"))) == ["m000", "m001", "m002", "m003", "m004"]
    assert len(list(record_store.iter_memories("acme"))) == 6


def test_memory_states_are_status_and_user_of_the_tenants_memories(
    record_store: SqlRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "CHUNK", 2)
    insert(record_store, cube(1), cube(2, user_id="bob", status=MemoryStatus.ARCHIVED),
           cube(3, status=MemoryStatus.DELETED), cube(4, tenant="other"), cube(5), cube(6))
    assert record_store.memory_states("acme", ["m002", "m004", "missing", "m003", "m001"]) == {
        "m001": ("active", "alice"), "m002": ("archived", "bob"), "m003": ("deleted", "alice")}
    assert record_store.memory_states("acme", []) == {}
    assert list(record_store.iter_memory_states("acme")) == [
        ("m001", "active", "alice"), ("m002", "archived", "bob"), ("m003", "deleted", "alice"),
        ("m005", "active", "alice"), ("m006", "active", "alice")]


def test_tenant_isolation_on_every_read(record_store: SqlRecordStore) -> None:
    c = cube(1)
    with record_store.unit_of_work() as uow:
        uow.add_messages([message(1)])
        uow.insert_memories([c])
        uow.log([EventLog(tenant="acme", user_id="alice", kind="write", payload={})])
    record_store.save_job(Job(id="job1", tenant="acme", kind="write", request={"user_id": "alice"}))

    assert record_store.get_memory("other", "m001") is None
    assert record_store.get_memories("other", ["m001"]) == []
    assert record_store.list_memories("other", MemoryQuery()).items == []
    assert record_store.list_memories("other", MemoryQuery(user_id="alice")).items == []
    assert list(record_store.iter_memories("other")) == []
    assert record_store.history("other", "m001") == []
    assert record_store.known_message_ids("other", "alice", ["msg1"]) == set()
    assert record_store.get_messages("other", "alice", ["msg1"]) == []
    assert record_store.get_job("other", "job1") is None
    assert record_store.events("other").items == []
    assert record_store.scope_stats("other") == []

    record_store.record_access("other", ["m001"], T0)
    assert record_store.purge_user("other", "alice") == dict.fromkeys(PURGED_TABLES, 0)
    assert record_store.get_memory("acme", "m001") == c
    assert len(record_store.history("acme", "m001")) == 1
    assert record_store.known_message_ids("acme", "alice", ["msg1"]) == {"msg1"}
    assert record_store.get_job("acme", "job1") is not None


def test_messages_are_idempotent_by_scope_and_id(record_store: SqlRecordStore) -> None:
    with record_store.unit_of_work() as uow:
        uow.add_messages([message(1), message(2), message(1, user_id="bob")])
    changed = message(1).model_copy(update={"content": "rewritten"})
    with record_store.unit_of_work() as uow:
        uow.add_messages([changed, message(3), message(3)])

    assert record_store.known_message_ids("acme", "alice", ["msg1", "msg2", "msg3", "msg4"]) == {"msg1", "msg2", "msg3"}
    assert record_store.known_message_ids("acme", "bob", ["msg1", "msg2"]) == {"msg1"}
    got = record_store.get_messages("acme", "alice", ["msg3", "msg1", "nope"])
    assert got == [message(3), message(1)]  # the first write of msg1 wins


def test_outbox_pending_complete_fail(record_store: SqlRecordStore) -> None:
    entries = [
        OutboxEntry(tenant="acme", op=OutboxOp.UPSERT_VECTORS, payload={"ids": ["m1"]}, created_at=T0),
        OutboxEntry(tenant="acme", op=OutboxOp.SET_STATUS, payload={"ids": ["m2"], "status": "deleted"}),
    ]
    with record_store.unit_of_work() as uow:
        uow.enqueue(entries)
        uow.enqueue([OutboxEntry(tenant="other", op=OutboxOp.INDEX_GRAPH, payload={"user_id": "u"})])
        assert [e.id for e in entries] == [None, None]  # ids arrive with the commit
    pending = record_store.pending_outbox()
    assert [e.id for e in entries] == [e.id for e in pending[:2]]
    assert [(e.tenant, e.op, e.attempts) for e in pending] == [
        ("acme", OutboxOp.UPSERT_VECTORS, 0), ("acme", OutboxOp.SET_STATUS, 0), ("other", OutboxOp.INDEX_GRAPH, 0),
    ]
    assert pending[0].payload == {"ids": ["m1"]} and pending[0].created_at == T0
    first, second, third = (e.id for e in pending)
    assert isinstance(first, int) and first < second < third
    assert [e.id for e in record_store.pending_outbox(limit=2)] == [first, second]

    record_store.complete_outbox([first, third])
    soon = utcnow() + timedelta(seconds=30)
    record_store.fail_outbox(second, "qdrant down", retry_at=soon)
    record_store.fail_outbox(second, "still down", retry_at=soon)
    (left,) = record_store.pending_outbox()
    assert (left.id, left.attempts, left.next_at, left.last_error) == (second, 2, soon, "still down")
    with record_store.engine.connect() as conn:
        done = conn.execute(select(func.count()).where(t.outbox.c.done_at.is_not(None))).scalar()
    assert done == 2
    now = utcnow()
    assert record_store.due_outbox(now, now) == []  # its retry is not due yet
    assert [e.id for e in record_store.due_outbox(soon, now)] == [second]
    assert record_store.outbox_stats(now)["retrying"] == 1

    record_store.fail_outbox(second, "gave up")  # no retry: a dead letter
    assert record_store.pending_outbox() == [] and record_store.due_outbox(soon, soon) == []
    (dead,) = record_store.dead_outbox()
    assert (dead.id, dead.attempts, dead.last_error) == (second, 3, "gave up") and dead.dead_at is not None
    assert {k: v for k, v in record_store.outbox_stats(now).items() if k != "oldest_age_s"} == {
        "pending": 0, "retrying": 0, "dead": 1}
    assert record_store.revive_outbox([second]) == 1
    (revived,) = record_store.due_outbox(utcnow(), now)
    assert (revived.id, revived.attempts, revived.dead_at) == (second, 0, None)
    record_store.complete_outbox([second])
    assert record_store.pending_outbox() == [] and record_store.dead_outbox() == []
    assert record_store.prune_outbox(utcnow() + timedelta(seconds=1)) == 3


def test_outbox_due_after_grace_and_purge_entries_leave_no_row(record_store: SqlRecordStore) -> None:
    fresh = OutboxEntry(tenant="acme", op=OutboxOp.UPSERT_VECTORS, payload={"user_id": "u", "ids": ["m1"]})
    graph = OutboxEntry(tenant="acme", op=OutboxOp.INDEX_GRAPH, payload={"user_id": "u", "ids": ["m1"]})
    purge = OutboxEntry(tenant="acme", op=OutboxOp.PURGE_SCOPE, payload={"user_id": "u"})
    with record_store.unit_of_work() as uow:
        uow.enqueue([fresh, graph, purge])
    now = utcnow()
    before = now - timedelta(seconds=10)
    assert record_store.due_outbox(now, before) == []  # left to the request during the grace
    assert [e.id for e in record_store.due_outbox(now, before, ops_now=[OutboxOp.INDEX_GRAPH])] == [graph.id]
    assert [e.id for e in record_store.due_outbox(now, now + timedelta(seconds=1))] == [fresh.id, graph.id, purge.id]
    assert record_store.unindexed_memory_ids("acme", "u") == {"m1"}
    assert record_store.unindexed_memory_ids("acme", "v") == set()
    record_store.complete_outbox([fresh.id, graph.id, purge.id])  # type: ignore[list-item]
    with record_store.engine.connect() as conn:
        ops = conn.execute(select(t.outbox.c.op).order_by(t.outbox.c.id)).scalars().all()
    assert ops == ["upsert_vectors", "index_graph"]  # the done purge entry, naming the user, is gone
    assert record_store.unindexed_memory_ids("acme", "u") == set()


def test_keys_by_hash(record_store: SqlRecordStore) -> None:
    key = ApiKey(tenant="acme", key_hash="h" * 64, prefix="msk_ab12", admin=True, created_at=T0)
    record_store.add_key(key)
    record_store.add_key(ApiKey(tenant="other", key_hash="g" * 64, prefix="msk_cd34", read_only=True))
    assert record_store.key_by_hash("h" * 64) == key
    assert record_store.key_by_hash("x" * 64) is None
    with pytest.raises(Conflict):
        record_store.add_key(ApiKey(tenant="evil", key_hash="h" * 64, prefix="msk_zz"))
    assert record_store.key_by_hash("h" * 64) == key


def test_jobs_upsert(record_store: SqlRecordStore) -> None:
    job = Job(id="job1", tenant="acme", kind="write", request={"user_id": "alice", "n": 2}, created_at=T0, updated_at=T0)
    record_store.save_job(job)
    assert record_store.get_job("acme", "job1") == job
    done = job.model_copy(update={
        "state": JobState.DONE, "result": {"written": 2}, "updated_at": T0 + timedelta(seconds=3),
    })
    record_store.save_job(done)
    assert record_store.get_job("acme", "job1") == done
    failed = done.model_copy(update={"state": JobState.FAILED, "result": None, "error": {"code": "internal"}})
    record_store.save_job(failed)
    assert record_store.get_job("acme", "job1") == failed
    assert record_store.get_job("acme", "nope") is None
    with pytest.raises(Conflict):
        record_store.save_job(Job(id="job1", tenant="other", kind="hijack"))
    assert record_store.get_job("acme", "job1") == failed
    assert record_store.get_job("other", "job1") is None


def test_unfinished_jobs_across_tenants(record_store: SqlRecordStore) -> None:
    for i, (tenant, state) in enumerate([
        ("acme", JobState.DONE), ("other", JobState.RUNNING), ("acme", JobState.PENDING), ("acme", JobState.FAILED),
    ]):
        record_store.save_job(Job(id=f"job{i}", tenant=tenant, kind="write", state=state, created_at=T0 - timedelta(seconds=i)))
    assert [(j.id, j.tenant, j.state) for j in record_store.unfinished_jobs()] == [
        ("job2", "acme", JobState.PENDING), ("job1", "other", JobState.RUNNING),
    ]


def test_events_page_newest_first(record_store: SqlRecordStore) -> None:
    with record_store.unit_of_work() as uow:
        uow.log([
            EventLog(tenant="acme", user_id="alice" if i % 2 == 0 else "bob", kind="recall" if i % 3 else "write",
                     payload={"i": i}, actor="k1", created_at=T0 + timedelta(seconds=i))
            for i in range(7)
        ])
        uow.log([EventLog(tenant="other", user_id=None, kind="admin", payload={"i": 99})])

    pages: list[list[int]] = []
    cursor = None
    while True:
        page = record_store.events("acme", limit=3, cursor=cursor)
        pages.append([e.payload["i"] for e in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [[6, 5, 4], [3, 2, 1], [0]]

    alice = record_store.events("acme", user_id="alice")
    assert [e.payload["i"] for e in alice.items] == [6, 4, 2, 0]
    writes = record_store.events("acme", kinds=["write"], limit=10)
    assert [e.payload["i"] for e in writes.items] == [6, 3, 0]
    assert record_store.events("acme", kinds=[]).items == []
    first = record_store.events("acme", limit=1).items[0]
    assert (first.user_id, first.actor, first.created_at) == ("alice", "k1", T0 + timedelta(seconds=6))
    assert [e.kind for e in record_store.events("other").items] == ["admin"]


PURGED_TABLES = (
    "memory_versions", "memories", "messages", "events", "entities", "relations", "mentions", "episode_state",
    "episodes", "jobs", "outbox", "name_vectors",
)


def test_purge_user_counts_and_leaves_others(record_store: SqlRecordStore) -> None:
    def seed(tenant: str, user_id: str, base: int) -> None:
        c = cube(base, tenant=tenant, user_id=user_id)
        with record_store.unit_of_work() as uow:
            uow.add_messages([message(base, tenant=tenant, user_id=user_id), message(base + 1, tenant=tenant, user_id=user_id)])
            uow.insert_memories([c, cube(base + 1, tenant=tenant, user_id=user_id)])
            uow.save_memory(c.model_copy(update={"version": 2, "content": "x"}), ChangeKind.UPDATE)
            uow.log([EventLog(tenant=tenant, user_id=user_id, kind="write", payload={})])
            uow.save_episodes(EpisodeState(tenant=tenant, user_id=user_id, episode=0, turns=2, seq=2),
                              [Episode(tenant=tenant, user_id=user_id, episode=0, turns=2)])
            uow.enqueue([
                OutboxEntry(tenant=tenant, op=OutboxOp.INDEX_GRAPH, payload={"user_id": user_id}),
                OutboxEntry(tenant=tenant, op=OutboxOp.PURGE_SCOPE, payload={"user_id": user_id}),
            ])
        # the shape MemoryOS.submit stores: the write request under "body"
        record_store.save_job(Job(id=f"job{base}", tenant=tenant, kind="write",
                                  request={"body": {"user_id": user_id, "messages": []}, "actor": None}))
        with record_store.engine.begin() as conn:
            conn.execute(t.entities.insert(), [
                {"id": f"e{base}{k}", "tenant": tenant, "user_id": user_id, "name": "Berlin", "norm_name": "berlin",
                 "label": "GPE", "aliases": [], "mention_count": 1, "created_at": T0} for k in range(2)
            ])
            conn.execute(t.relations.insert().values(
                id=f"r{base}", tenant=tenant, user_id=user_id, subject_id=f"e{base}0", predicate="lives_in",
                object_id=f"e{base}1", memory_id=c.id, weight=1.0, created_at=T0,
            ))
            conn.execute(t.mentions.insert().values(
                tenant=tenant, user_id=user_id, memory_id=c.id, entity_id=f"e{base}0", weight=1.0,
            ))
            conn.execute(t.name_vectors.insert().values(tenant=tenant, user_id=user_id, key=f"k{base}", vector=b"\0" * 8))

    seed("acme", "alice", 0)
    seed("acme", "bob", 10)
    seed("other", "alice", 20)

    counts = record_store.purge_user("acme", "alice")
    assert counts == {
        "memory_versions": 3, "memories": 2, "messages": 2, "events": 1, "entities": 2,
        "relations": 1, "mentions": 1, "episode_state": 1, "episodes": 1, "jobs": 1, "outbox": 1,
        "name_vectors": 1,
    }
    assert record_store.episode_state("acme", "alice") is None and record_store.episodes("acme", "alice") == []
    assert record_store.list_memories("acme", MemoryQuery(user_id="alice")).items == []
    assert record_store.history("acme", "m000") == []
    assert record_store.known_message_ids("acme", "alice", ["msg0", "msg1"]) == set()
    assert record_store.get_job("acme", "job0") is None
    # the pending purge_scope entry survives: the derived stores still need it
    assert [(e.tenant, e.op, e.payload["user_id"]) for e in record_store.pending_outbox() if e.tenant == "acme"] == [
        ("acme", OutboxOp.PURGE_SCOPE, "alice"), ("acme", OutboxOp.INDEX_GRAPH, "bob"), ("acme", OutboxOp.PURGE_SCOPE, "bob"),
    ]

    for tenant, user_id, base in (("acme", "bob", 10), ("other", "alice", 20)):
        assert ids(record_store.list_memories(tenant, MemoryQuery(user_id=user_id)).items) == [f"m{base + 1:03d}", f"m{base:03d}"]
        assert [v.version for v in record_store.history(tenant, f"m{base:03d}")] == [1, 2]
        assert record_store.known_message_ids(tenant, user_id, [f"msg{base}", f"msg{base + 1}"]) == {f"msg{base}", f"msg{base + 1}"}
        assert record_store.get_job(tenant, f"job{base}") is not None
        assert len(record_store.events(tenant, user_id=user_id).items) == 1
        assert [e.turns for e in record_store.episodes(tenant, user_id)] == [2]
    with record_store.engine.connect() as conn:
        for table in (t.entities, t.relations, t.mentions):
            owners = conn.execute(select(table.c.tenant, table.c.user_id).distinct()).all()
            assert sorted(owners) == [("acme", "bob"), ("other", "alice")]

    assert record_store.purge_user("acme", "alice") == dict.fromkeys(PURGED_TABLES, 0)


def test_record_access(record_store: SqlRecordStore) -> None:
    insert(record_store, cube(1), cube(2), cube(3, tenant="other"))
    at = datetime(2024, 7, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    record_store.record_access("acme", ["m001", "m002", "m003"], at)
    record_store.record_access("acme", ["m001"], at + timedelta(hours=1))
    record_store.record_access("acme", [], at)
    a, b = record_store.get_memories("acme", ["m001", "m002"])
    assert (a.access_count, a.last_accessed_at) == (2, at + timedelta(hours=1))
    assert (b.access_count, b.last_accessed_at) == (1, at)
    assert b.last_accessed_at.utcoffset() == timedelta(0)
    other = record_store.get_memory("other", "m003")
    assert (other.access_count, other.last_accessed_at) == (0, None)
    # a batch of three accesses flushed late never moves the last access back in time
    record_store.record_access("acme", ["m001", "m002"], at - timedelta(days=1), times=3)
    a, b = record_store.get_memories("acme", ["m001", "m002"])
    assert (a.access_count, a.last_accessed_at, b.access_count, b.last_accessed_at) == (
        5, at + timedelta(hours=1), 4, at)


def test_scope_stats_and_tenants(record_store: SqlRecordStore) -> None:
    insert(
        record_store,
        cube(1, content="abc"),
        cube(2, content="ü€", type=MemoryType.EPISODIC),  # 2 characters, 5 UTF-8 bytes
        cube(3, content="zzzz", status=MemoryStatus.ARCHIVED, updated_at=T0 + timedelta(days=2)),
        cube(4, content="deleted!", status=MemoryStatus.DELETED, updated_at=T0 + timedelta(days=3)),
        cube(5, content="b", user_id="bob"),
        cube(6, content="x", tenant="other"),
    )
    record_store.add_key(ApiKey(tenant="keys-only", key_hash="k1", prefix="msk_1"))

    stats = record_store.scope_stats("acme")
    assert [(s.tenant, s.user_id) for s in stats] == [("acme", "alice"), ("acme", "bob")]
    alice = stats[0]
    assert alice.counts == {"episodic": 1, "semantic": 1, "procedural": 0, "refined": 0}
    assert (alice.total, alice.bytes) == (3, 3 + 5 + 4)
    assert alice.last_write == T0 + timedelta(days=3)
    assert (stats[1].total, stats[1].bytes, stats[1].counts["semantic"]) == (1, 1, 1)
    everyone = record_store.scope_stats()
    assert [(s.tenant, s.user_id) for s in everyone] == [("acme", "alice"), ("acme", "bob"), ("other", "alice")]
    assert record_store.tenants() == ["acme", "keys-only", "other"]


def test_migrate_twice_and_second_store(record_url: str) -> None:
    first = SqlRecordStore.from_url(record_url)
    first.migrate()
    first.migrate()
    insert(first, cube(1))
    second = SqlRecordStore.from_url(record_url)
    try:
        second.migrate()
        assert second.get_memory("acme", "m001") == cube(1)
        insert(second, cube(2))
        assert ids(first.list_memories("acme", MemoryQuery()).items) == ["m002", "m001"]
        with second.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [HEAD]
    finally:
        first.close()
        second.close()


def test_migrations_match_schema(record_store: SqlRecordStore) -> None:
    with record_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), t.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert tables == {table.name for table in t.metadata.sorted_tables} | {"alembic_version"}


def test_reopened_store_sees_data(record_url: str) -> None:
    store = SqlRecordStore.from_url(record_url)
    store.migrate()
    insert(store, cube(1, metadata={"k": "v"}))
    store.add_key(ApiKey(tenant="acme", key_hash="kh", prefix="msk"))
    store.close()

    reopened = SqlRecordStore.from_url(record_url)
    try:
        reopened.migrate()
        assert reopened.get_memory("acme", "m001") == cube(1, metadata={"k": "v"})
        assert reopened.key_by_hash("kh") is not None
    finally:
        reopened.close()


def test_concurrent_units_of_work(record_store: SqlRecordStore) -> None:
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for n in range(10):
                c = cube(0, id=f"w{worker}-{n}", content=f"worker {worker} item {n}")
                with record_store.unit_of_work() as uow:
                    uow.insert_memories([c])
                    uow.log([EventLog(tenant="acme", user_id="alice", kind="write", payload={"w": worker})])
                record_store.record_access("acme", [c.id], T0)
                assert record_store.get_memory("acme", c.id) is not None
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(list(record_store.iter_memories("acme"))) == 80
    assert len(record_store.events("acme", limit=200).items) == 80
