"""Episode rows and the structure queries of recall, on every record backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memsvc.errors import Conflict
from memsvc.models import (
    EPISODE_KEY,
    TURN_KEY,
    ChangeKind,
    Episode,
    EpisodeState,
    Job,
    JobState,
    MemoryCube,
    MemoryStatus,
    MemoryType,
)
from storage.sql import SqlRecordStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def turn(i: int, episode: int, *, user_id: str = "alice", status: MemoryStatus = MemoryStatus.ACTIVE) -> MemoryCube:
    return MemoryCube(id=f"t{i:03d}", tenant="acme", user_id=user_id, type=MemoryType.EPISODIC, content=f"turn {i}",
                      source_ids=[f"msg{i}"], status=status, event_time=T0,
                      metadata={EPISODE_KEY: episode, TURN_KEY: i})


def test_save_episodes_upserts_the_state_and_keeps_the_digest_columns(record_store: SqlRecordStore) -> None:
    state = EpisodeState(tenant="acme", user_id="alice", episode=0, turns=3, seq=3, last_time=T0,
                         last_session="s1", last_vector=[0.6, 0.8], sim_mean=0.5, sim_var=0.01, sim_n=2)
    with record_store.unit_of_work() as uow:
        uow.save_episodes(state, [Episode(tenant="acme", user_id="alice", episode=0, turns=3, started_at=T0)])
    with record_store.unit_of_work() as uow:
        uow.mark_digested("acme", "alice", 0, 3, "d1", expected=0)
    with pytest.raises(Conflict), record_store.unit_of_work() as uow:  # a second run that read 0 too
        uow.mark_digested("acme", "alice", 0, 3, "d2", expected=0)
    grown = state.model_copy(update={"episode": 1, "turns": 1, "seq": 4})
    with record_store.unit_of_work() as uow:
        uow.save_episodes(grown, [
            Episode(tenant="acme", user_id="alice", episode=0, turns=3, started_at=T0, closed_at=T0, boundary="gap"),
            Episode(tenant="acme", user_id="alice", episode=1, turns=1, started_at=T0 + timedelta(hours=1)),
        ])
    stored = record_store.episode_state("acme", "alice")
    assert stored is not None
    assert (stored.episode, stored.turns, stored.seq, stored.last_vector, stored.sim_n) == (1, 1, 4, [0.6, 0.8], 2)
    first, second = record_store.episodes("acme", "alice")
    assert (first.digest_id, first.digest_turns, first.boundary, first.closed_at) == ("d1", 3, "gap", T0)
    assert (second.digest_id, second.digest_turns, second.closed_at) == (None, 0, None)
    assert record_store.episode_state("acme", "bob") is None
    assert record_store.episodes("other", "alice") == []
    # the open episode waits until it is idle; the closed one is digested already
    assert record_store.undigested_episodes(T0) == []
    assert [e.episode for e in record_store.undigested_episodes(datetime.now(UTC) + timedelta(seconds=5))] == [1]


def test_episode_turns_and_adjacent_turns_follow_the_stream(record_store: SqlRecordStore) -> None:
    with record_store.unit_of_work() as uow:
        uow.insert_memories([turn(i, i // 4) for i in (5, 0, 3, 1, 2, 4, 6)]
                            + [turn(7, 1, status=MemoryStatus.DELETED), turn(8, 1, user_id="bob")])
    assert [c.id for c in record_store.episode_turns("acme", "alice", [1])] == ["t004", "t005", "t006"]
    assert [c.id for c in record_store.episode_turns("acme", "alice", [0, 1])] == [f"t{i:03d}" for i in range(7)]
    assert record_store.episode_turns("acme", "alice", []) == []
    assert [c.id for c in record_store.adjacent_turns("acme", "alice", 3, 1)] == ["t002", "t003", "t004"]
    assert [c.id for c in record_store.adjacent_turns("acme", "alice", 6, 2)] == ["t004", "t005", "t006"]
    assert record_store.status_counts("acme") == {"active": 8, "superseded": 0, "archived": 0, "deleted": 1}
    assert record_store.status_counts("other") == {"active": 0, "superseded": 0, "archived": 0, "deleted": 0}


def test_job_counts_and_recent_jobs(record_store: SqlRecordStore) -> None:
    for i, (kind, state) in enumerate([("lifecycle.digest", JobState.DONE), ("lifecycle.digest", JobState.DONE),
                                       ("lifecycle.merge", JobState.FAILED), ("write", JobState.PENDING)]):
        record_store.save_job(Job(id=f"j{i}", tenant="acme", kind=kind, state=state,
                                  updated_at=T0 + timedelta(seconds=i)))
    assert record_store.job_counts() == [("lifecycle.digest", "done", 2), ("lifecycle.merge", "failed", 1),
                                         ("write", "pending", 1)]
    assert [j.id for j in record_store.recent_jobs(limit=2)] == ["j3", "j2"]
    assert [j.id for j in record_store.recent_jobs(kinds=["lifecycle.digest"])] == ["j1", "j0"]
    record_store.save_job(Job(id="x", tenant="other", kind="write", updated_at=T0 + timedelta(hours=1)))
    assert record_store.job_counts("other") == [("write", "pending", 1)]
    assert [j.id for j in record_store.recent_jobs("acme", limit=1)] == ["j3"]


def test_structure_lookups_seek_an_index_instead_of_scanning_the_scope(record_store: SqlRecordStore) -> None:
    """The turns of an episode and a turn's neighbours are found through the `episode` / `turn`
    columns' indexes; filtering the scope's JSON metadata read every memory of the user per lookup."""
    if record_store.engine.dialect.name != "sqlite":
        pytest.skip("the plan is read with SQLite's EXPLAIN QUERY PLAN")
    from sqlalchemy import select

    from storage.sql import schema as t

    m = t.memories
    for where in (m.c.episode.in_([1, 2]), m.c.turn.between(3, 9)):
        stmt = select(m.c.id).where(m.c.tenant == "acme", m.c.user_id == "alice", where)
        sql = str(stmt.compile(record_store.engine, compile_kwargs={"literal_binds": True}))
        with record_store.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        column = "episode" if "episode" in sql.split("WHERE")[1] else "turn"
        assert f"ix_memories_tenant_user_id_{column}" in plan, plan


def test_a_turns_position_columns_follow_its_metadata(record_store: SqlRecordStore) -> None:
    """The indexed copies are written with every version of the row (insert and update)."""
    with record_store.unit_of_work() as uow:
        uow.insert_memories([turn(1, 0)])
    moved = turn(1, 3).model_copy(update={"version": 2})
    with record_store.unit_of_work() as uow:
        uow.save_memory(moved, ChangeKind.UPDATE)
    assert [c.id for c in record_store.episode_turns("acme", "alice", [3])] == ["t001"]
    assert record_store.episode_turns("acme", "alice", [0]) == []


def test_undigested_episodes_of_one_scope(record_store: SqlRecordStore) -> None:
    """The digest job asks for one scope's waiting episodes (closed, or idle), in order, and no others."""
    later = datetime.now(UTC) + timedelta(seconds=5)
    for user_id, n in (("alice", 4), ("bob", 2)):
        state = EpisodeState(tenant="acme", user_id=user_id, episode=n - 1, turns=1, seq=n)
        with record_store.unit_of_work() as uow:
            uow.save_episodes(state, [Episode(tenant="acme", user_id=user_id, episode=i, turns=2, started_at=T0,
                                              closed_at=T0 if i < n - 1 else None) for i in range(n)])
    with record_store.unit_of_work() as uow:
        uow.mark_digested("acme", "alice", 1, 2, "d1", expected=0)
    assert [e.episode for e in record_store.undigested_episodes(T0, scope=("acme", "alice"))] == [0, 2]
    assert [e.episode for e in record_store.undigested_episodes(later, scope=("acme", "alice"))] == [0, 2, 3]
    assert [e.episode for e in record_store.undigested_episodes(later, 2, scope=("acme", "alice"))] == [0, 2]
    assert [e.user_id for e in record_store.undigested_episodes(later, scope=("acme", "bob"))] == ["bob", "bob"]
    assert record_store.undigested_episodes(later, scope=("other", "alice")) == []
    assert len(record_store.undigested_episodes(later)) == 5


def test_ranked_memories_follow_the_profiles_order(record_store: SqlRecordStore) -> None:
    def fact(i: int, importance: float, written_by: str, *, status: MemoryStatus = MemoryStatus.ACTIVE,
             valid_from: datetime | None = None, user_id: str = "alice") -> MemoryCube:
        return MemoryCube(id=f"f{i}", tenant="acme", user_id=user_id, type=MemoryType.SEMANTIC, content=f"fact {i}",
                          importance=importance, written_by=written_by, status=status, valid_from=valid_from,
                          created_at=T0 + timedelta(minutes=i))
    with record_store.unit_of_work() as uow:
        uow.insert_memories([
            fact(1, 0.5, "a"), fact(2, 0.9, "b"), fact(3, 0.5, "a", valid_from=T0 + timedelta(days=1)),
            fact(4, 0.5, "a"), fact(5, 0.99, "c"), fact(6, 0.99, "a", status=MemoryStatus.SUPERSEDED),
            fact(7, 0.99, "a", user_id="bob"),
        ])
    assert [c.id for c in record_store.ranked_memories("acme", "alice", ["a", "b"], 10)] == ["f2", "f3", "f4", "f1"]
    assert [c.id for c in record_store.ranked_memories("acme", "alice", ["a", "b"], 2)] == ["f2", "f3"]
    assert record_store.ranked_memories("acme", "alice", ["x"], 10) == []


def test_consolidation_lookups_seek_an_index_instead_of_scanning(record_store: SqlRecordStore) -> None:
    """The digest job's and the sweep's waiting episodes come from the partial indexes (only the
    episodes not yet digested), the profile's facts from the (written_by, importance) index."""
    if record_store.engine.dialect.name != "sqlite":
        pytest.skip("the plan is read with SQLite's EXPLAIN QUERY PLAN")
    from sqlalchemy import select

    from storage.sql import schema as t

    e, m = t.episodes, t.memories
    waiting = e.c.digest_turns != e.c.turns
    cases = [
        (select(e.c.episode).where(waiting, e.c.tenant == "acme", e.c.user_id == "alice").order_by(e.c.episode),
         "ix_episodes_undigested_scope"),
        (select(e.c.episode).where(waiting, e.c.closed_at.is_not(None)).order_by(e.c.updated_at),
         "ix_episodes_undigested_updated_at"),
        (select(m.c.id).where(m.c.tenant == "acme", m.c.user_id == "alice", m.c.written_by.in_(["a", "b"]),
                              m.c.status == "active").order_by(m.c.importance.desc()),
         "ix_memories_tenant_user_id_written_by_importance"),
    ]
    for stmt, index in cases:
        sql = str(stmt.compile(record_store.engine, compile_kwargs={"literal_binds": True}))
        with record_store.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert index in plan, (sql, plan)


def test_changed_memory_states_and_job_marks(record_store: SqlRecordStore) -> None:
    """Incremental reconciliation reads a tenant's memories changed after a time, any status, oldest
    change first, through the (tenant, updated_at, id) index; and keeps a mark per job and tenant."""
    def cube(i: int, minutes: int, status: MemoryStatus = MemoryStatus.ACTIVE, tenant: str = "acme") -> MemoryCube:
        at = T0 + timedelta(minutes=minutes)
        return MemoryCube(id=f"c{i}", tenant=tenant, user_id=f"u{i % 2}", type=MemoryType.EPISODIC, content=f"c {i}",
                          status=status, created_at=T0, updated_at=at)
    with record_store.unit_of_work() as uow:
        uow.insert_memories([cube(1, 5), cube(2, 1), cube(3, 9, MemoryStatus.DELETED), cube(4, 7, tenant="other")])
    assert list(record_store.changed_memory_states("acme", T0 + timedelta(minutes=2))) == [
        ("c1", "active", "u1"), ("c3", "deleted", "u1")]
    assert [r[0] for r in record_store.changed_memory_states("acme", T0)] == ["c2", "c1", "c3"]
    assert record_store.job_mark("reconcile.changed", "acme") is None
    record_store.set_job_mark("reconcile.changed", "acme", T0)
    record_store.set_job_mark("reconcile.changed", "acme", T0 + timedelta(hours=1))
    record_store.set_job_mark("reconcile.full", "acme", T0)
    assert record_store.job_mark("reconcile.changed", "acme") == T0 + timedelta(hours=1)
    assert (record_store.job_mark("reconcile.full", "acme"), record_store.job_mark("reconcile.changed", "other")) == (T0, None)
    if record_store.engine.dialect.name == "sqlite":
        from sqlalchemy import select

        from storage.sql import schema as t

        m = t.memories
        stmt = select(m.c.id).where(m.c.tenant == "acme", m.c.updated_at > T0).order_by(m.c.updated_at, m.c.id)
        sql = str(stmt.compile(record_store.engine, compile_kwargs={"literal_binds": True}))
        with record_store.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "ix_memories_tenant_updated_at_id" in plan, plan
