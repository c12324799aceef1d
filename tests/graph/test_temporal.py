"""Temporal facts: validity at a time, supersession of single-valued facts, as_of edges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from spacy.language import Language

from memsvc.graph.ids import entity_id, normalize_name, relation_id
from memsvc.graph.service import GraphService, adjacency_at
from memsvc.graph.temporal import predicate_family, supersede, valid_at
from memsvc.models import Entity, MemoryCube, MemoryType, Mention, Relation
from memsvc.ports import GraphStore, VectorFilter
from storage.graph.falkor import FalkorGraphStore
from storage.graph.sql import SqlGraphStore
from storage.sql import schema
from storage.sql.engine import make_engine, sqlite_url

T, U = "t1", "u1"
MAY_2023 = datetime(2023, 5, 1, tzinfo=UTC)
JAN_2024 = datetime(2024, 1, 10, tzinfo=UTC)
JUN_2024 = datetime(2024, 6, 1, tzinfo=UTC)


def eid(name: str) -> str:
    return entity_id(T, U, normalize_name(name))


def rel(s: str, p: str, o: str, memory: str | None, when: datetime | None = None, **kw: Any) -> Relation:
    return Relation(id=relation_id(T, U, eid(s), p, eid(o), memory), tenant=T, user_id=U, subject_id=eid(s),
                    predicate=p, object_id=eid(o), memory_id=memory, valid_from=when, **kw)


def ent(name: str) -> Entity:
    return Entity(id=eid(name), tenant=T, user_id=U, name=name)


def men(memory: str, name: str) -> Mention:
    return Mention(tenant=T, user_id=U, memory_id=memory, entity_id=eid(name))


@pytest.fixture(params=["sql", pytest.param("falkordb", marks=pytest.mark.service)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    if request.param == "sql":
        eng = make_engine(sqlite_url(tmp_path / "graph.db"))
        schema.metadata.create_all(eng)
        sql_store = SqlGraphStore(eng)
        yield sql_store
        sql_store.close()
        eng.dispose()
        return
    falkor = FalkorGraphStore(*request.getfixturevalue("falkordb_server"))
    falkor._redis.flushall()
    yield falkor
    falkor._redis.flushall()
    falkor.close()


# -- pure rules -------------------------------------------------------------------------


def test_predicate_families() -> None:
    assert predicate_family("live in") == predicate_family("Move  to") == "residence"
    assert predicate_family("work for") == "employer"
    assert predicate_family("not live in") is None
    assert predicate_family("visit") is None
    assert predicate_family("synonym") is None


def test_valid_at_is_half_open() -> None:
    r = rel("alice", "live in", "berlin", "m1", MAY_2023, valid_to=JAN_2024)
    assert not valid_at(r, datetime(2023, 4, 30, tzinfo=UTC))
    assert valid_at(r, MAY_2023)
    assert valid_at(r, datetime(2024, 1, 9, 23, 59, tzinfo=UTC))
    assert not valid_at(r, JAN_2024)
    assert valid_at(rel("alice", "like", "tea", "m2"), MAY_2023)  # undated: always
    assert valid_at(r, datetime(2023, 6, 1))  # naive times are UTC


def test_newer_fact_closes_the_stored_one() -> None:
    old = rel("alice", "live in", "berlin", "m1", MAY_2023)
    new = rel("alice", "move to", "paris", "m2", JAN_2024)
    out, closed = supersede([old], [new])
    assert out == [new]
    assert [(c.id, c.valid_to, c.valid_from, c.object_id) for c in closed] == [(old.id, JAN_2024, MAY_2023, eid("berlin"))]


def test_older_fact_written_late_is_closed_itself() -> None:
    stored = rel("alice", "move to", "paris", "m2", JAN_2024)
    late = rel("alice", "live in", "berlin", "m1", MAY_2023)
    out, closed = supersede([stored], [late])
    assert closed == []
    assert [(r.id, r.valid_to) for r in out] == [(late.id, JAN_2024)]


def test_chain_in_one_write_closes_each_by_the_next() -> None:
    a = rel("alice", "live in", "berlin", "m1", MAY_2023)
    b = rel("alice", "move to", "paris", "m2", JAN_2024)
    c = rel("alice", "move to", "rome", "m3", JUN_2024)
    out, closed = supersede([], [c, a, b])
    assert closed == []
    assert [(r.object_id, r.valid_to) for r in out] == [(eid("rome"), None), (eid("berlin"), JAN_2024),
                                                        (eid("paris"), JUN_2024)]


def test_what_does_not_supersede() -> None:
    old = rel("alice", "live in", "berlin", "m1", MAY_2023)
    already_closed = rel("alice", "live in", "madrid", "m0", datetime(2020, 1, 1, tzinfo=UTC), valid_to=MAY_2023)
    cases = [
        rel("alice", "live in", "berlin", "m2", JAN_2024),  # same object restated
        rel("bob", "move to", "paris", "m3", JAN_2024),  # another subject
        rel("alice", "work for", "acme", "m4", JAN_2024),  # another family
        rel("alice", "move to", "rome", "m5"),  # undated
        rel("alice", "move to", "oslo", "m6", MAY_2023),  # same time: order unknown
        rel("alice", "not live in", "rome", "m7", JAN_2024),  # negated: no family
    ]
    for new in cases:
        assert supersede([old, already_closed], [new]) == ([new], [])


# -- stores and the service -------------------------------------------------------------


def test_store_applies_closing_once_and_keeps_the_relation(store: GraphStore) -> None:
    old = rel("alice", "live in", "berlin", "m1", MAY_2023)
    store.upsert(T, U, [ent("Alice"), ent("Berlin")], [old], [men("m1", "alice"), men("m1", "berlin")])
    store.upsert(T, U, [], [old.model_copy(update={"valid_to": JAN_2024})], [])
    store.upsert(T, U, [], [old.model_copy(update={"valid_to": JUN_2024})], [])  # closed already: unchanged
    [stored] = store.relations(T, U).items
    assert (stored.id, stored.valid_from, stored.valid_to) == (old.id, MAY_2023, JAN_2024)
    [snap_rel] = store.snapshot(T, U).relations
    assert (snap_rel.id, snap_rel.predicate, snap_rel.valid_to) == (old.id, "live in", JAN_2024)


def cube(mid: str, content: str, when: datetime) -> MemoryCube:
    return MemoryCube(id=mid, tenant=T, user_id=U, type=MemoryType.EPISODIC, content=content,
                      source_ids=[mid], event_time=when, valid_from=when)


def test_move_closes_residence_and_as_of_sees_the_old_graph(store: GraphStore, nlp: Language) -> None:
    service = GraphService(store, nlp)
    for c in (cube("m1", "Alice: I live in Berlin.", MAY_2023), cube("m2", "Alice: I moved to Paris.", JAN_2024)):
        store.upsert(T, U, *service.extract([c]))
    facts = {(r.predicate, r.object_id): r for r in store.relations(T, U).items}
    assert facts[("live in", eid("berlin"))].valid_to == JAN_2024
    assert facts[("move to", eid("paris"))].valid_to is None

    snap = store.snapshot(T, U)
    col = {e: i for i, e in enumerate(snap.entity_ids)}
    alice, berlin, paris = col[eid("alice")], col[eid("berlin")], col[eid("paris")]
    then, now = adjacency_at(snap, datetime(2023, 6, 1, tzinfo=UTC)), adjacency_at(snap, JUN_2024)
    # relation edge (1) + co-mention (1) while valid, co-mention only afterwards
    assert (then[alice, berlin], now[alice, berlin]) == (2.0, 1.0)
    # the Paris fact did not exist yet in June 2023
    assert (then[alice, paris], now[alice, paris]) == (1.0, 2.0)
    assert snap.adjacency[alice, berlin] == 2.0  # the snapshot itself is not changed


def test_the_ppr_walk_is_reused_until_the_graph_or_the_valid_relations_change(
    store: GraphStore, nlp: Language
) -> None:
    service = GraphService(store, nlp)
    for c in (cube("m1", "Alice: I live in Berlin.", MAY_2023), cube("m2", "Alice: I moved to Paris.", JAN_2024)):
        store.upsert(T, U, *service.extract([c]))
    then, now = datetime(2023, 6, 1, tzinfo=UTC), JUN_2024

    def walk_at(when: datetime) -> Any:
        hits = service.retrieve(T, U, "Where does Alice live?", [], VectorFilter(tenant=T, user_id=U, valid_at=when), 10)
        assert hits, "Alice seeds the walk"
        return service._walks[(T, U)]

    first = walk_at(then)
    assert walk_at(then) is first  # same graph, same valid relations: nothing rebuilt
    later = walk_at(now)
    assert later is not first and later.walk is not first.walk
    snap = store.snapshot(T, U)
    for prepared, when in ((first, then), (later, now)):
        assert (prepared.adjacency != adjacency_at(snap, when)).nnz == 0
    assert walk_at(JAN_2024.replace(month=3)) is later  # still the same relations valid
    store.upsert(T, U, *service.extract([cube("m3", "Alice: I adopted a cat named Miso.", JUN_2024)]))
    assert walk_at(now) is not later  # a write makes a new snapshot
