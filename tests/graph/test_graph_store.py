"""Contract tests of the `GraphStore` port, run against every backend (SQL and FalkorDB)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacy.language import Language
from sqlalchemy import event

from memsvc.errors import InvalidInput
from memsvc.graph.extract import extract_graph, extract_graph_batch, to_records
from memsvc.graph.ids import entity_id, normalize_name, relation_id
from memsvc.graph.ppr import rank_memories
from memsvc.models import Entity, Mention, Relation
from memsvc.ports import GraphSnapshot, GraphStore
from storage.graph.falkor import FalkorGraphStore
from storage.graph.sql import SqlGraphStore
from storage.sql import schema
from storage.sql.engine import make_engine, sqlite_url

T1, T2, U1, U2 = "t1", "t2", "u1", "u2"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Any]:
    eng = make_engine(sqlite_url(tmp_path / "graph.db"))
    schema.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sql", pytest.param("falkordb", marks=pytest.mark.service)])
def store(request: pytest.FixtureRequest, engine: Any) -> Iterator[GraphStore]:
    if request.param == "sql":
        sql_store = SqlGraphStore(engine)
        yield sql_store
        sql_store.close()
        return
    host, port = request.getfixturevalue("falkordb_server")
    falkor = FalkorGraphStore(host, port)
    falkor._redis.flushall()
    yield falkor
    falkor._redis.flushall()
    falkor.close()


# -- data -------------------------------------------------------------------------------


def ent(name: str, tenant: str = T1, user: str = U1, **kw: Any) -> Entity:
    return Entity(id=entity_id(tenant, user, normalize_name(name)), tenant=tenant, user_id=user, name=name, **kw)


def rel(s: str, p: str, o: str, memory: str | None, tenant: str = T1, user: str = U1, **kw: Any) -> Relation:
    sid, oid = eid(s, tenant, user), eid(o, tenant, user)
    return Relation(id=relation_id(tenant, user, sid, p, oid, memory), tenant=tenant, user_id=user,
                    subject_id=sid, predicate=p, object_id=oid, memory_id=memory, **kw)


def men(memory: str, name: str, tenant: str = T1, user: str = U1, weight: float = 1.0) -> Mention:
    return Mention(tenant=tenant, user_id=user, memory_id=memory, entity_id=eid(name, tenant, user), weight=weight)


def eid(name: str, tenant: str = T1, user: str = U1) -> str:
    return entity_id(tenant, user, normalize_name(name))


def write_alice(store: GraphStore, tenant: str = T1, user: str = U1, mem: str = "") -> None:
    """m1: Alice moved to Berlin.  m2: Alice's cat (alias Kitty) is called Miso."""
    m1, m2 = f"{mem}m1", f"{mem}m2"
    store.upsert(
        tenant, user,
        [ent("Alice", tenant, user, label="PERSON"), ent("Berlin", tenant, user, label="GPE"),
         ent("cat", tenant, user, aliases=["Kitty"]), ent("Miso", tenant, user)],
        [rel("alice", "move to", "berlin", m1, tenant, user,
             valid_from=datetime(2023, 5, 1, tzinfo=UTC)),
         rel("alice", "have", "cat", m2, tenant, user),
         rel("cat", "be called", "miso", m2, tenant, user, weight=2.0)],
        [men(m1, "alice", tenant, user), men(m1, "berlin", tenant, user),
         men(m2, "alice", tenant, user), men(m2, "cat", tenant, user), men(m2, "miso", tenant, user)],
    )


def edges(snap: GraphSnapshot) -> dict[tuple[str, str], float]:
    coo = snap.adjacency.tocoo()
    return {(snap.entity_ids[i], snap.entity_ids[j]): float(w) for i, j, w in zip(coo.row, coo.col, coo.data, strict=True)}


def mention_cells(snap: GraphSnapshot) -> dict[tuple[str, str], float]:
    coo = snap.mentions.tocoo()
    return {(snap.memory_ids[i], snap.entity_ids[j]): float(w) for i, j, w in zip(coo.row, coo.col, coo.data, strict=True)}


def sym(pairs: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    out = {}
    for (a, b), w in pairs.items():
        out[(eid(a), eid(b))] = w
        out[(eid(b), eid(a))] = w
    return out


ALICE_EDGES = {
    ("alice", "berlin"): 2.0,  # relation 1 + co-mention in m1
    ("alice", "cat"): 2.0,  # relation 1 + co-mention in m2
    ("cat", "miso"): 3.0,  # relation 2 + co-mention in m2
    ("alice", "miso"): 1.0,  # co-mention in m2 only
}


# -- contract ---------------------------------------------------------------------------


def test_snapshot_has_relation_and_co_mention_edges(store: GraphStore) -> None:
    write_alice(store)
    snap = store.snapshot(T1, U1)
    assert sorted(snap.entity_ids) == sorted(eid(n) for n in ("alice", "berlin", "cat", "miso"))
    assert sorted(snap.memory_ids) == ["m1", "m2"]
    assert snap.adjacency.shape == (4, 4) and snap.mentions.shape == (2, 4)
    assert edges(snap) == sym(ALICE_EDGES)
    assert (snap.adjacency != snap.adjacency.T).nnz == 0
    assert mention_cells(snap) == {
        ("m1", eid("alice")): 1.0, ("m1", eid("berlin")): 1.0,
        ("m2", eid("alice")): 1.0, ("m2", eid("cat")): 1.0, ("m2", eid("miso")): 1.0,
    }


def test_upsert_is_idempotent_and_counts_mentions(store: GraphStore) -> None:
    write_alice(store)
    write_alice(store)
    assert edges(store.snapshot(T1, U1)) == sym(ALICE_EDGES)
    counts = {e.name: e.mention_count for e in store.entities(T1, U1).items}
    assert counts == {"Alice": 2, "Berlin": 1, "cat": 1, "Miso": 1}
    assert len(store.relations(T1, U1).items) == 3


def test_upsert_merges_entities_by_id(store: GraphStore) -> None:
    write_alice(store)
    cats = Entity(id=eid("cat"), tenant=T1, user_id=U1, name="Cats", aliases=["kitty", "Puss"], label="ANIMAL")
    store.upsert(T1, U1, [cats], [], [men("m3", "cat", weight=0.5)])
    cat = store.find_entities(T1, U1, ["cat"])[0]
    assert (cat.id, cat.name, cat.label) == (eid("cat"), "cat", "ANIMAL")
    assert cat.aliases == ["Kitty", "Cats", "Puss"]
    assert cat.mention_count == 2
    assert mention_cells(store.snapshot(T1, U1))[("m3", eid("cat"))] == 0.5
    # a second weight for the same mention replaces the first
    store.upsert(T1, U1, [], [], [men("m3", "cat", weight=0.25)])
    assert mention_cells(store.snapshot(T1, U1))[("m3", eid("cat"))] == 0.25


def test_find_entities_by_normalised_name_or_alias(store: GraphStore) -> None:
    write_alice(store)
    write_alice(store, T1, U2, mem="u2-")
    found = store.find_entities(T1, U1, ["KITTY!", "the Berlin", "nobody", ""])
    assert [e.name for e in found] == ["cat", "Berlin"]
    assert [e.user_id for e in found] == [U1, U1]
    assert found[1] == Entity(id=eid("berlin"), tenant=T1, user_id=U1, name="Berlin", label="GPE", mention_count=1)
    assert store.find_entities(T2, U1, ["berlin"]) == []
    assert store.find_entities(T1, U1, []) == []


def test_entities_and_relations_page_by_cursor(store: GraphStore) -> None:
    write_alice(store)
    first = store.entities(T1, U1, limit=3)
    assert len(first.items) == 3 and first.next_cursor is not None
    second = store.entities(T1, U1, limit=3, cursor=first.next_cursor)
    assert len(second.items) == 1 and second.next_cursor is None
    ids = [e.id for e in first.items + second.items]
    assert ids == sorted(eid(n) for n in ("alice", "berlin", "cat", "miso"))

    page = store.relations(T1, U1, limit=2)
    rest = store.relations(T1, U1, limit=2, cursor=page.next_cursor)
    rels = page.items + rest.items
    assert rest.next_cursor is None and [r.id for r in rels] == sorted(r.id for r in rels)
    moved = next(r for r in rels if r.predicate == "move to")
    assert moved == rel("alice", "move to", "berlin", "m1", valid_from=datetime(2023, 5, 1, tzinfo=UTC))
    assert store.entities(T2, U1).items == []
    with pytest.raises(InvalidInput):
        store.entities(T1, U1, cursor="not a cursor")


def test_entities_of_memories(store: GraphStore) -> None:
    write_alice(store)
    got = store.entities_of(T1, ["m2", "m1", "missing"])
    assert {k: [e.name for e in v] for k, v in got.items()} == {
        "m2": ["Alice", "Miso", "cat"], "m1": ["Alice", "Berlin"], "missing": [],
    }
    assert store.entities_of(T2, ["m1"]) == {"m1": []}


def test_delete_memories_drops_orphans(store: GraphStore) -> None:
    write_alice(store)
    store.snapshot(T1, U1)  # warm any cache: the delete must invalidate it
    store.delete_memories(T1, ["m1", "unknown"])
    snap = store.snapshot(T1, U1)
    assert sorted(snap.entity_ids) == sorted(eid(n) for n in ("alice", "cat", "miso"))
    assert snap.memory_ids == ["m2"]
    assert edges(snap) == sym({k: v for k, v in ALICE_EDGES.items() if "berlin" not in k})
    assert sorted(r.predicate for r in store.relations(T1, U1).items) == ["be called", "have"]
    assert store.find_entities(T1, U1, ["berlin"]) == []
    assert store.find_entities(T1, U1, ["alice"])[0].mention_count == 1
    store.delete_memories(T1, ["m2"])
    snap = store.snapshot(T1, U1)
    assert snap.entity_ids == [] and snap.adjacency.shape == (0, 0) and snap.mentions.shape == (0, 0)


def test_delete_is_isolated_between_users_and_tenants(store: GraphStore) -> None:
    for tenant, user, mem in ((T1, U1, ""), (T1, U2, "u2-"), (T2, U1, "")):
        write_alice(store, tenant, user, mem)
    store.delete_memories(T2, ["m1"])  # the other tenant's m1 only
    assert len(store.snapshot(T1, U1).entity_ids) == 4
    assert len(store.snapshot(T2, U1).entity_ids) == 3

    assert store.delete_scope(T1, U1) == 4
    assert store.delete_scope(T1, U1) == 0
    empty = store.snapshot(T1, U1)
    assert (empty.entity_ids, empty.memory_ids, empty.adjacency.shape) == ([], [], (0, 0))
    assert store.entities(T1, U1).items == [] and store.relations(T1, U1).items == []
    assert store.entities_of(T1, ["m1"]) == {"m1": []}
    assert [e.name for e in store.entities_of(T1, ["u2-m1"])["u2-m1"]] == ["Alice", "Berlin"]
    other = store.snapshot(T1, U2)
    assert {(eid(a, T1, U2), eid(b, T1, U2)) for a, b in ALICE_EDGES} <= set(edges(other))
    assert len(store.entities(T1, U2).items) == 4


def test_rejects_records_outside_the_scope_or_unknown_entities(store: GraphStore) -> None:
    with pytest.raises(InvalidInput):
        store.upsert(T1, U1, [ent("Alice", T1, U2)], [], [])
    with pytest.raises(InvalidInput):
        store.upsert(T1, U1, [ent("Alice")], [rel("alice", "know", "bob", "m1")], [])
    assert store.entities(T1, U1).items == []
    # entities written earlier may be referenced later
    store.upsert(T1, U1, [ent("Alice"), ent("Bob")], [], [])
    store.upsert(T1, U1, [], [rel("alice", "know", "bob", None)], [men("m9", "bob")])
    assert edges(store.snapshot(T1, U1)) == sym({("alice", "bob"): 1.0})


def test_user_text_is_data_not_query(store: GraphStore) -> None:
    nasty = 'Bobby"}) DETACH DELETE n //\\ \n\'; DROP TABLE entities; --'
    store.upsert(T1, U1, [ent(nasty, aliases=["$names", "`x`"])], [], [men("m1", nasty)])
    [found] = store.find_entities(T1, U1, [nasty])
    assert (found.name, found.aliases) == (nasty, ["$names", "`x`"])
    assert store.find_entities(T1, U1, ["`x`"]) == [found]


def test_catalog_lists_the_snapshot_entities_and_relations(store: GraphStore) -> None:
    write_alice(store)
    store.upsert(T1, U1, [ent("Rome")], [rel("miso", "visit", "rome", "m3")], [men("m3", "rome")])
    catalog, snap = store.catalog(T1, U1), store.snapshot(T1, U1)
    assert catalog.entity_ids == snap.entity_ids and catalog.entity_names == snap.entity_names
    assert sorted(r.id for r in catalog.relations) == sorted(r.id for r in snap.relations)
    assert len(catalog.entity_ids) == 5 and eid("rome") in catalog.entity_ids
    assert store.catalog(T1, "nobody").entity_ids == []


@pytest.mark.service
def test_same_matrices_on_every_backend(engine: Any, falkordb_server: tuple[str, int]) -> None:
    sql = SqlGraphStore(engine)
    falkor = FalkorGraphStore(*falkordb_server)
    falkor._redis.flushall()
    try:
        for s in (sql, falkor):
            write_alice(s)
            s.upsert(T1, U1, [ent("Rome")], [rel("miso", "visit", "rome", "m3", weight=0.5)],
                     [men("m3", "miso", weight=2.0), men("m3", "rome")])
        a, b = sql.snapshot(T1, U1), falkor.snapshot(T1, U1)
        assert edges(a) == edges(b) and mention_cells(a) == mention_cells(b)
        assert edges(a)[(eid("miso"), eid("rome"))] == 0.5 + 2.0  # relation + product of mention weights
    finally:
        falkor._redis.flushall()
        falkor.close()


# -- backend specifics ------------------------------------------------------------------


def test_sql_snapshot_follows_upserts_without_reloading(engine: Any) -> None:
    store = SqlGraphStore(engine)
    write_alice(store)
    before = store.snapshot(T1, U1)
    assert store.loads == 1

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    store.upsert(T1, U1, [ent("Rome"), ent("Miso")], [rel("miso", "visit", "rome", "m3")],
                 [men("m3", "miso"), men("m3", "rome")])
    event.listen(engine, "before_cursor_execute", count)
    try:
        after = store.snapshot(T1, U1)
        again = store.snapshot(T1, U1)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Only the scope's version is read (another node may have changed the scope): no reload.
    selects = [s for s in statements if s.startswith("SELECT")]
    assert len(selects) == 2 and all("FROM scopes" in s for s in selects)
    assert store.loads == 1
    assert again is after
    assert after.entity_ids[:4] == before.entity_ids and after.entity_ids[4] == eid("rome")
    assert after.memory_ids == ["m1", "m2", "m3"]
    assert edges(after)[(eid("miso"), eid("rome"))] == 2.0
    assert before.adjacency.shape == (4, 4)  # earlier snapshots are not mutated

    fresh = SqlGraphStore(engine).snapshot(T1, U1)
    assert edges(fresh) == edges(after) and mention_cells(fresh) == mention_cells(after)


@pytest.mark.service
def test_falkor_snapshot_is_reused_until_the_graph_changes(falkordb_server: tuple[str, int]) -> None:
    store = FalkorGraphStore(*falkordb_server)
    store._redis.flushall()
    try:
        write_alice(store)
        first = store.snapshot(T1, U1)
        assert store.snapshot(T1, U1) is first and store.builds == 1
        store.upsert(T1, U1, [ent("Rome")], [], [men("m3", "rome")])
        assert len(store.snapshot(T1, U1).entity_ids) == 5 and store.builds == 2
        assert np.isclose(first.adjacency.sum(), 2 * sum(ALICE_EDGES.values()))
    finally:
        store._redis.flushall()
        store.close()


def test_extraction_to_ranked_memories(store: GraphStore, nlp: Language) -> None:
    """The write path (spaCy -> records -> upsert) and the read path (names -> seeds -> PPR)."""
    texts = {
        "m1": "I moved to Berlin in May 2023.",
        "m2": "My cat is called Miso.",
        "m3": "Caroline went to the LGBTQ support group.",
        "m4": "The Berlin apartment has a balcony.",
    }
    extractions = extract_graph_batch(nlp, list(texts.values()), ["Alice"] * len(texts))
    for mid, x in zip(texts, extractions, strict=True):
        store.upsert(T1, U1, *to_records(x, T1, U1, mid))
    seeds = store.find_entities(T1, U1, extract_graph(nlp, "Where does Alice live in Berlin?").names())
    assert [e.name for e in seeds] == ["Alice", "Berlin"]
    snap = store.snapshot(T1, U1)
    index = {e: i for i, e in enumerate(snap.entity_ids)}
    scores = rank_memories(snap.adjacency, snap.mentions, {index[e.id]: 1.0 for e in seeds})
    ranked = [snap.memory_ids[i] for i in np.argsort(-scores, kind="stable")]
    assert ranked[0] == "m1" and ranked[-1] == "m3"
    assert scores[snap.memory_ids.index("m3")] == 0.0  # another component: no mass


WRITER = """
import sys
from sqlalchemy import create_engine
from storage.graph.sql import SqlGraphStore
from tests.graph.test_graph_store import T1, U1, ent, men, rel
store = SqlGraphStore(create_engine(sys.argv[1]))
if sys.argv[2] == "add":
    store.upsert(T1, U1, [ent("Oslo"), ent("Alice")], [rel("alice", "live in", "oslo", "m9")],
                 [men("m9", "alice"), men("m9", "oslo")])
else:
    store.delete_memories(T1, ["m9"])
"""


def test_sql_cache_sees_another_process_writes_and_deletes(tmp_path: Path) -> None:
    from storage.sql import SqlRecordStore

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    records = SqlRecordStore.from_url(url)
    records.migrate()
    store = SqlGraphStore(records.engine)
    try:
        write_alice(store)
        assert "m9" not in store.snapshot(T1, U1).memory_ids
        repo = Path(__file__).resolve().parents[2]
        for step in ("add", "delete"):
            done = subprocess.run([sys.executable, "-c", WRITER, url, step], cwd=repo, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            snap = store.snapshot(T1, U1)
            assert ("m9" in snap.memory_ids) is (step == "add"), step
            assert (eid("oslo") in store.catalog(T1, U1).entity_ids) is (step == "add"), step
        assert store.loads == 3  # first use, then once after each change by the other process
    finally:
        store.close()
        records.close()
