"""Contract tests of `VectorIndex`, on qdrant-edge and on qdrant-client's local mode."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memsvc.errors import BackendUnavailable, InvalidInput
from memsvc.models import MemoryStatus, MemoryType
from memsvc.ports import VectorFilter, VectorIndex, VectorPayload, VectorPoint, text_digest
from storage.vectors.common import FETCH_BATCH
from storage.vectors.edge import EdgeVectorIndex
from storage.vectors.qdrant import QdrantVectorIndex

DIM = 4
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ACTIVE, SUPERSEDED, ARCHIVED = MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED, MemoryStatus.ARCHIVED
SEMANTIC, EPISODIC, PROCEDURAL = MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.PROCEDURAL


def mid(n: int) -> str:
    return str(uuid.UUID(int=n))


def payload(tenant: str = "acme", user_id: str = "u1", **fields: Any) -> VectorPayload:
    fields.setdefault("type", SEMANTIC)
    fields.setdefault("status", ACTIVE)
    fields.setdefault("created_at", T0)
    return VectorPayload(tenant=tenant, user_id=user_id, **fields)


def point(n: int, vector: list[float] | None = None, text: str = "", **fields: Any) -> VectorPoint:
    return VectorPoint(id=mid(n), vector=vector or [1.0, 0.0, 0.0, 0.0], text=text, payload=payload(**fields))


def flt(tenant: str = "acme", **fields: Any) -> VectorFilter:
    return VectorFilter(tenant=tenant, **fields)


def ids(index: VectorIndex, f: VectorFilter, limit: int = 100) -> set[str]:
    return {i for i, _ in index.search([1.0, 0.0, 0.0, 0.0], f, limit)}


Factory = Callable[[], VectorIndex]


@pytest.fixture(params=["edge", "qdrant-local"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens the index of each backend (edge: the same shard directory every time)."""
    opened: list[VectorIndex] = []

    def make() -> VectorIndex:
        index: VectorIndex
        if request.param == "edge":
            index = EdgeVectorIndex(tmp_path / "shard", DIM)
        else:
            index = QdrantVectorIndex.local(None, "memsvc", DIM)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


@pytest.fixture
def vector_index(make_index: Factory) -> VectorIndex:
    return make_index()


# ------------------------------------------------------------------ dense search


def test_search_ranks_by_cosine_best_first(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, [1.0, 0.0, 0.0, 0.0]),
        point(2, [1.0, 1.0, 0.0, 0.0]),
        point(3, [0.0, 1.0, 0.0, 0.0]),
        point(4, [-1.0, 0.2, 0.0, 0.0]),
        point(5, [2.0, 0.1, 0.0, 0.0]),
    ])
    hits = vector_index.search([1.0, 0.0, 0.0, 0.0], flt(), 10)
    assert [i for i, _ in hits] == [mid(1), mid(5), mid(2), mid(3), mid(4)]
    scores = [s for _, s in hits]
    assert scores == pytest.approx([1.0, 2 / np.sqrt(4.01), 1 / np.sqrt(2), 0.0, -1 / np.sqrt(1.04)], abs=1e-5)
    assert [i for i, _ in vector_index.search(np.array([0.0, 1.0, 0.0, 0.0]), flt(), 2)] == [mid(3), mid(2)]


def test_upsert_replaces_a_point(vector_index: VectorIndex) -> None:
    vector_index.upsert([point(1, [1.0, 0.0, 0.0, 0.0], text="old words"), point(2, [0.0, 1.0, 0.0, 0.0])])
    vector_index.upsert([point(1, [0.0, 0.0, 1.0, 0.0], text="new words", status=ARCHIVED)])
    assert vector_index.count(flt()) == 2
    assert vector_index.search([0.0, 0.0, 1.0, 0.0], flt(), 1)[0] == (mid(1), pytest.approx(1.0))
    assert vector_index.count(flt(statuses=[ACTIVE])) == 1
    assert vector_index.search_text("old", flt(), 10) == []
    assert [i for i, _ in vector_index.search_text("new", flt(), 10)] == [mid(1)]


def test_wrong_dimension_is_invalid_input(vector_index: VectorIndex) -> None:
    with pytest.raises(InvalidInput):
        vector_index.upsert([point(1, [1.0, 0.0, 0.0])])
    with pytest.raises(InvalidInput):
        vector_index.search([1.0, 0.0], flt(), 5)


# ------------------------------------------------------------------ tenant and scope


def test_tenants_are_isolated(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, text="the secret plan", tenant="acme", user_id="u1"),
        point(2, text="the secret plan", tenant="globex", user_id="u1"),
        point(3, text="secret", tenant="globex", user_id="u2"),
    ])
    assert ids(vector_index, flt("acme")) == {mid(1)}
    assert ids(vector_index, flt("acme", user_id="u1")) == {mid(1)}
    assert ids(vector_index, flt("globex", user_id="u1")) == {mid(2)}
    assert ids(vector_index, flt("acme", ids=[mid(2), mid(3)])) == set()
    assert [i for i, _ in vector_index.search_text("secret plan", flt("acme"), 10)] == [mid(1)]
    assert vector_index.count(flt("acme")) == 1
    assert vector_index.count(flt("globex")) == 2
    assert vector_index.count(flt("initech")) == 0


def test_keyword_filters(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, type=SEMANTIC, status=ACTIVE, agent_id="a1", session_id="s1"),
        point(2, type=EPISODIC, status=ACTIVE, agent_id="a2", session_id="s1"),
        point(3, type=PROCEDURAL, status=SUPERSEDED, agent_id="a1"),
        point(4, type=SEMANTIC, status=ARCHIVED, user_id="u2", session_id="s2"),
    ])
    assert ids(vector_index, flt(user_id="u1")) == {mid(1), mid(2), mid(3)}
    assert ids(vector_index, flt(types=[SEMANTIC])) == {mid(1), mid(4)}
    assert ids(vector_index, flt(types=[EPISODIC, PROCEDURAL])) == {mid(2), mid(3)}
    assert ids(vector_index, flt(statuses=[ACTIVE])) == {mid(1), mid(2)}
    assert ids(vector_index, flt(statuses=[SUPERSEDED, ARCHIVED])) == {mid(3), mid(4)}
    assert ids(vector_index, flt(agent_id="a1")) == {mid(1), mid(3)}
    assert ids(vector_index, flt(session_id="s1")) == {mid(1), mid(2)}
    assert ids(vector_index, flt(user_id="u1", types=[SEMANTIC], statuses=[ACTIVE], agent_id="a1")) == {mid(1)}
    assert ids(vector_index, flt(ids=[mid(2), mid(4), mid(99)])) == {mid(2), mid(4)}
    assert ids(vector_index, flt(ids=[mid(2), mid(4)], statuses=[ACTIVE])) == {mid(2)}
    # An empty list allows nothing.
    assert ids(vector_index, flt(ids=[])) == set()
    assert ids(vector_index, flt(types=[])) == set()
    assert vector_index.count(flt(statuses=[])) == 0


def test_metadata_exact_match(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, metadata={"project": "apollo", "priority": 2, "score": 0.5, "pinned": True, "a.b": "x"}),
        point(2, metadata={"project": "gemini", "priority": 2.0, "score": 0.25, "pinned": False}),
        point(3, metadata={"project": "apollo", "priority": 3, "nested": {"k": "v"}}),
        point(4),
    ])
    assert ids(vector_index, flt(metadata={"project": "apollo"})) == {mid(1), mid(3)}
    assert ids(vector_index, flt(metadata={"project": "Apollo"})) == set()
    assert ids(vector_index, flt(metadata={"priority": 2})) == {mid(1), mid(2)}  # 2 == 2.0
    assert ids(vector_index, flt(metadata={"score": 0.25})) == {mid(2)}
    assert ids(vector_index, flt(metadata={"pinned": True})) == {mid(1)}
    assert ids(vector_index, flt(metadata={"pinned": False})) == {mid(2)}
    assert ids(vector_index, flt(metadata={"a.b": "x"})) == {mid(1)}
    assert ids(vector_index, flt(metadata={"project": "apollo", "priority": 3})) == {mid(3)}
    assert ids(vector_index, flt(metadata={"missing": "x"})) == set()
    with pytest.raises(InvalidInput):
        vector_index.search([1.0, 0.0, 0.0, 0.0], flt(metadata={'bad"key': "x"}), 5)


def test_valid_at(vector_index: VectorIndex) -> None:
    t = T0 + timedelta(days=10)
    day = timedelta(days=1)
    vector_index.upsert([
        point(1),  # no validity bounds, created before t
        point(2, created_at=t + day),  # recorded after t, still valid at t (valid time, not record time)
        point(3, valid_from=t - day),
        point(4, valid_from=t + day),  # not yet valid
        point(5, valid_from=t),  # valid_from <= t holds at equality
        point(6, valid_to=t + day),
        point(7, valid_to=t),  # valid_to > t fails at equality
        point(8, valid_from=t - 2 * day, valid_to=t - day),  # expired
        point(9, valid_from=t - day, valid_to=t + day),
        point(10, created_at=t),
    ])
    assert ids(vector_index, flt(valid_at=t)) == {mid(1), mid(2), mid(3), mid(5), mid(6), mid(9), mid(10)}
    assert vector_index.count(flt(valid_at=t)) == 7
    # Naive datetimes are taken as UTC.
    assert ids(vector_index, flt(valid_at=t.replace(tzinfo=None))) == ids(vector_index, flt(valid_at=t))
    assert ids(vector_index, flt(valid_at=t + 3 * day)) == {mid(1), mid(2), mid(3), mid(4), mid(5), mid(10)}


def test_event_time_range(vector_index: VectorIndex) -> None:
    day = timedelta(days=1)
    vector_index.upsert([
        point(1, event_time=T0),
        point(2, event_time=T0 + day),
        point(3, event_time=T0 + 2 * day),
        point(4),  # no event time
    ])
    assert ids(vector_index, flt(event_from=T0 + day)) == {mid(2), mid(3)}
    assert ids(vector_index, flt(event_to=T0 + day)) == {mid(1)}
    assert ids(vector_index, flt(event_from=T0, event_to=T0 + 2 * day)) == {mid(1), mid(2)}
    assert ids(vector_index, flt(event_from=T0 + 5 * day)) == set()
    assert vector_index.count(flt()) == 4


# ------------------------------------------------------------------ updates


def test_set_payload_changes_filter_outcome(vector_index: VectorIndex) -> None:
    p1, p2 = point(1, text="coffee order"), point(2, valid_to=T0 + timedelta(days=1))
    vector_index.upsert([p1, p2])
    t = T0 + timedelta(days=5)
    assert ids(vector_index, flt(statuses=[ACTIVE])) == {mid(1), mid(2)}
    assert ids(vector_index, flt(valid_at=t)) == {mid(1)}

    vector_index.set_payload([
        (mid(1), replace(p1.payload, status=SUPERSEDED, valid_to=T0 + timedelta(days=1))),
        (mid(2), replace(p2.payload, valid_to=None, metadata={"k": "v"})),
        (mid(99), p1.payload),  # not in the index: ignored
    ])
    assert ids(vector_index, flt(statuses=[ACTIVE])) == {mid(2)}
    assert ids(vector_index, flt(valid_at=t)) == {mid(2)}
    assert ids(vector_index, flt(metadata={"k": "v"})) == {mid(2)}
    assert vector_index.count(flt()) == 2
    # Vectors and text stay.
    assert vector_index.search([1.0, 0.0, 0.0, 0.0], flt(ids=[mid(1)]), 1) == [(mid(1), pytest.approx(1.0))]
    assert [i for i, _ in vector_index.search_text("coffee", flt(), 5)] == [mid(1)]
    vector_index.set_payload([])


def test_vectors_read_back_with_their_digest(vector_index: VectorIndex) -> None:
    """What a sweep reads instead of embedding again: the stored (unit) vector and the digest of the
    text it embeds, which a status change (payload only) keeps and a point without one lacks."""
    v1 = np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    p1 = point(1, v1.tolist(), digest=text_digest("I moved to Paris"))
    vector_index.upsert([p1, point(2, [0.0, 0.0, 1.0, 0.0]), point(3, [0.0, 0.0, 3.0, 4.0], digest="d3")])
    got = vector_index.vectors([mid(1), mid(2), mid(3), mid(99), mid(1)])
    assert set(got) == {mid(1), mid(2), mid(3)}  # unknown ids left out, duplicates once
    digest, vector = got[mid(1)]
    assert digest == text_digest("I moved to Paris") and vector.dtype == np.float32
    assert vector == pytest.approx(v1, abs=1e-6)
    assert got[mid(2)][0] is None
    assert got[mid(3)][1] == pytest.approx([0.0, 0.0, 0.6, 0.8], abs=1e-6)  # cosine space: stored normalised
    vector_index.set_payload([(mid(1), replace(p1.payload, status=ARCHIVED))])
    assert vector_index.vectors([mid(1)])[mid(1)][0] == text_digest("I moved to Paris")
    assert vector_index.vectors([]) == {}


def test_vectors_are_read_in_batches(vector_index: VectorIndex) -> None:
    n = FETCH_BATCH + 7
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vector_index.upsert([point(i, vecs[i].tolist(), digest=str(i)) for i in range(n)])
    got = vector_index.vectors([mid(i) for i in range(n)])
    assert len(got) == n
    assert all(got[mid(i)][0] == str(i) for i in range(n))
    assert np.stack([got[mid(i)][1] for i in range(n)]) == pytest.approx(vecs, abs=1e-5)


def test_set_payload_can_move_a_point_out_of_a_scope(vector_index: VectorIndex) -> None:
    vector_index.upsert([point(1)])
    vector_index.set_payload([(mid(1), payload(tenant="globex"))])
    assert vector_index.count(flt("acme")) == 0
    assert ids(vector_index, flt("globex")) == {mid(1)}


def test_delete_and_delete_scope(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, user_id="u1", text="alpha"), point(2, user_id="u1", text="alpha"),
        point(3, user_id="u2", text="alpha"), point(4, tenant="globex", user_id="u1", text="alpha"),
    ])
    vector_index.delete([mid(1), mid(99)])
    vector_index.delete([])
    assert ids(vector_index, flt()) == {mid(2), mid(3)}
    vector_index.delete_scope("acme", "u1")
    assert ids(vector_index, flt()) == {mid(3)}
    assert ids(vector_index, flt("globex")) == {mid(4)}
    assert [i for i, _ in vector_index.search_text("alpha", flt(), 10)] == [mid(3)]
    vector_index.delete_scope("acme", "nobody")
    assert vector_index.count(flt()) == 1


def test_compact_keeps_every_live_point_and_its_searches(make_index: Factory) -> None:
    index = make_index()
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(40, DIM))
    index.upsert([point(i, list(vecs[i]), text=f"note {i} about zebras" if i % 2 else f"note {i}",
                        user_id="u1" if i < 25 else "u2", metadata={"k": i % 3}) for i in range(40)])
    index.delete_scope("acme", "u1")
    before = [index.search(list(vecs[i]), flt(user_id="u2"), 5) for i in range(25, 40)]
    text_before = index.search_text("zebras", flt(user_id="u2"), 10)
    index.compact()
    assert index.count(flt()) == 15 and index.count(flt(user_id="u1")) == 0
    assert [index.search(list(vecs[i]), flt(user_id="u2"), 5) for i in range(25, 40)] == before
    assert index.search_text("zebras", flt(user_id="u2"), 10) == text_before
    assert index.count(flt(metadata={"k": 1})) == 5
    index.upsert([point(100, text="after compaction")])  # still writable
    assert index.count(flt()) == 16


def test_edge_compaction_removes_deleted_payloads_from_disk_and_survives_reopen(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.upsert([point(1, user_id="secretuser77", session_id="secretsession77"), point(2, user_id="u2")])
    index.delete_scope("acme", "secretuser77")
    index.flush()
    holding = lambda: [p for p in (tmp_path / "shard").rglob("*") if p.is_file() and b"secret" in p.read_bytes()]  # noqa: E731
    assert holding() != []
    index.compact()
    index.close()
    assert holding() == [] and not (tmp_path / "shard.old").exists() and not (tmp_path / "shard.compact").exists()
    reopened = EdgeVectorIndex(tmp_path / "shard", DIM)
    try:
        assert ids(reopened, flt()) == {mid(2)}
    finally:
        reopened.close()


def test_edge_recovers_from_a_compaction_that_crashed_in_its_swap(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.upsert([point(1), point(2)])
    index.close()
    (tmp_path / "shard").rename(tmp_path / "shard.old")  # the old shard moved away, the copy not yet in place
    (tmp_path / "shard.compact").mkdir()
    reopened = EdgeVectorIndex(tmp_path / "shard", DIM)
    try:
        assert ids(reopened, flt()) == {mid(1), mid(2)}
        assert not (tmp_path / "shard.compact").exists()
    finally:
        reopened.close()


def test_count_is_exact(vector_index: VectorIndex) -> None:
    rng = np.random.default_rng(7)
    statuses = [ACTIVE, SUPERSEDED, ARCHIVED]
    points = [
        point(n, rng.standard_normal(DIM).tolist(), user_id=f"u{n % 3}", status=statuses[n % 2])
        for n in range(1, 301)
    ]
    vector_index.upsert(points)
    assert vector_index.count(flt()) == 300
    assert vector_index.count(flt(user_id="u0")) == 100
    assert vector_index.count(flt(user_id="u0", statuses=[SUPERSEDED])) == 50
    assert len(vector_index.search([1.0, 0.0, 0.0, 0.0], flt(user_id="u1"), 1000)) == 100


# ------------------------------------------------------------------ BM25


def test_bm25_rare_term_outranks_common_terms(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, text="I like coffee in the morning"),
        point(2, text="I like tea in the morning"),
        point(3, text="I like walks in the morning"),
        point(4, text="my cat is called Zorro"),
        point(5, text="nothing relevant here"),
    ])
    hits = vector_index.search_text("Zorro likes the morning", flt(), 10)
    assert hits[0][0] == mid(4)
    assert {i for i, _ in hits} == {mid(1), mid(2), mid(3), mid(4)}
    assert hits[0][1] > hits[1][1] > 0
    # Stemming: "running" finds "runs"; case and stop words do not matter.
    vector_index.upsert([point(6, text="She runs every day"), point(7, text="He RAN once")])
    assert [i for i, _ in vector_index.search_text("running", flt(), 10)] == [mid(6)]
    assert vector_index.search_text("COFFEE", flt(), 1)[0][0] == mid(1)


def test_bm25_empty_and_unknown_queries(vector_index: VectorIndex) -> None:
    vector_index.upsert([point(1, text="hello world"), point(2, text="")])
    assert vector_index.search_text("", flt(), 10) == []
    assert vector_index.search_text("the of and", flt(), 10) == []  # stop words only
    assert vector_index.search_text("xylophone", flt(), 10) == []
    assert vector_index.search_text("hello", flt(), 0) == []
    assert [i for i, _ in vector_index.search_text("hello", flt(), 10)] == [mid(1)]


def test_bm25_respects_filters(vector_index: VectorIndex) -> None:
    vector_index.upsert([
        point(1, text="deploy the rocket", status=ACTIVE),
        point(2, text="deploy the rocket today", status=SUPERSEDED),
        point(3, text="deploy", user_id="u2"),
    ])
    assert [i for i, _ in vector_index.search_text("rocket deploy", flt(user_id="u1", statuses=[ACTIVE]), 10)] == [mid(1)]
    assert {i for i, _ in vector_index.search_text("deploy", flt(), 10)} == {mid(1), mid(2), mid(3)}
    assert len(vector_index.search_text("deploy", flt(), 2)) == 2


def test_bm25_idf_is_scoped_to_the_user(vector_index: VectorIndex) -> None:
    vector_index.upsert([point(1, text="pizza on friday"), point(2, text="sushi on monday")])
    before = vector_index.search_text("pizza", flt(user_id="u1"), 5)
    # Another tenant (and another user) writing the same term often changes nothing for u1.
    vector_index.upsert([point(100 + n, text="pizza pizza", tenant="globex") for n in range(20)])
    vector_index.upsert([point(200 + n, text="pizza", user_id="u2") for n in range(20)])
    assert vector_index.search_text("pizza", flt(user_id="u1"), 5) == [(mid(1), pytest.approx(before[0][1]))]


def test_backends_agree_on_keyword_scores(tmp_path: Path) -> None:
    texts = [
        "Alice moved to Berlin in 2021", "Alice works at a bakery", "Bob visits Berlin every summer",
        "The bakery sells rye bread", "Running marathons is Alice's hobby", "Bob runs a small bakery in Paris",
    ]
    points = [point(n, [1.0, float(n), 0.0, 0.0], text=t) for n, t in enumerate(texts, 1)]
    edge = EdgeVectorIndex(tmp_path / "shard", DIM)
    local = QdrantVectorIndex.local(None, "memsvc", DIM)
    try:
        for index in (edge, local):
            index.upsert(points)
        for query in ["alice bakery", "berlin", "run", "bread Paris"]:
            a, b = edge.search_text(query, flt(), 10), local.search_text(query, flt(), 10)
            assert [i for i, _ in a] == [i for i, _ in b]
            assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-4)
        a, b = edge.search([1.0, 2.0, 0.0, 0.0], flt(), 10), local.search([1.0, 2.0, 0.0, 0.0], flt(), 10)
        assert [i for i, _ in a] == [i for i, _ in b]
    finally:
        edge.close()
        local.close()


# ------------------------------------------------------------------ lifecycle


def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.upsert([point(1, [1.0, 0.0, 0.0, 0.0], text="persistent memory"), point(2, [0.0, 1.0, 0.0, 0.0])])
    index.set_payload([(mid(2), payload(status=ARCHIVED))])
    index.delete([mid(3)])
    index.flush()
    index.close()
    index.close()  # a second close is harmless

    reopened = EdgeVectorIndex(tmp_path / "shard", DIM)
    try:
        assert reopened.count(flt()) == 2
        assert reopened.count(flt(statuses=[ARCHIVED])) == 1
        assert reopened.search([0.0, 1.0, 0.0, 0.0], flt(), 1) == [(mid(2), pytest.approx(1.0))]
        assert [i for i, _ in reopened.search_text("memory", flt(), 5)] == [mid(1)]
        assert set(reopened.info().payload_schema) == {
            "tenant", "user_id", "type", "status", "agent_id", "session_id",
            "created_at", "event_time", "valid_from", "valid_to",
        }
    finally:
        reopened.close()


def test_edge_reopen_without_flush_replays_the_wal(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.upsert([point(1, text="written just before a crash")])
    index._shard.close()  # skip our flush: what is on disk is the WAL
    reopened = EdgeVectorIndex(tmp_path / "shard", DIM)
    try:
        assert [i for i, _ in reopened.search_text("crash", flt(), 5)] == [mid(1)]
    finally:
        reopened.close()


def test_edge_rejects_a_different_dimension(tmp_path: Path) -> None:
    EdgeVectorIndex(tmp_path / "shard", DIM).close()
    with pytest.raises(Exception, match="size"):
        EdgeVectorIndex(tmp_path / "shard", 8)


def test_qdrant_local_on_disk_survives_reopen(tmp_path: Path) -> None:
    index = QdrantVectorIndex.local(tmp_path / "qdrant", "memsvc", DIM)
    index.upsert([point(1, text="kept on disk")])
    index.close()
    reopened = QdrantVectorIndex.local(tmp_path / "qdrant", "memsvc", DIM)
    try:
        assert [i for i, _ in reopened.search_text("disk", flt(), 5)] == [mid(1)]
    finally:
        reopened.close()
    with pytest.raises(InvalidInput):
        QdrantVectorIndex.local(tmp_path / "qdrant", "memsvc", 8)


def test_closed_index_refuses_calls(vector_index: VectorIndex) -> None:
    vector_index.close()
    with pytest.raises(BackendUnavailable):
        vector_index.search([1.0, 0.0, 0.0, 0.0], flt(), 5)
    with pytest.raises(BackendUnavailable):
        vector_index.upsert([point(1)])


def test_edge_optimize_keeps_results(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    try:
        rng = np.random.default_rng(3)
        index.upsert([point(n, rng.standard_normal(DIM).tolist(), user_id=f"u{n % 2}") for n in range(1, 2001)])
        index.delete([mid(n) for n in range(1, 101)])
        before = index.search([1.0, 0.5, 0.0, 0.0], flt(user_id="u1"), 10)
        index.optimize()
        assert index.search([1.0, 0.5, 0.0, 0.0], flt(user_id="u1"), 10) == before
        assert index.count(flt()) == 1900
    finally:
        index.close()


def test_edge_optimizes_in_the_background_after_many_writes(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.optimizer.after = 100
    try:
        index.upsert([point(n, text="bulk") for n in range(1, 91)])
        assert index.optimizer.pending == 90  # not due yet
        index.upsert([point(n, text="bulk") for n in range(91, 251)])
        deadline = time.monotonic() + 10
        while index.optimizer.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert index.optimizer.pending == 0
        assert index.count(flt()) == 250
    finally:
        index.close()


def test_concurrent_reads_and_writes(vector_index: VectorIndex) -> None:
    errors: list[BaseException] = []
    rng = np.random.default_rng(11)

    def write(base: int) -> None:
        try:
            for k in range(10):
                batch = [point(base + 20 * k + j, rng.standard_normal(DIM).tolist(), text=f"note {j}") for j in range(20)]
                vector_index.upsert(batch)
                vector_index.set_payload([(batch[0].id, replace(batch[0].payload, status=ARCHIVED))])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(50):
                vector_index.search([1.0, 0.0, 0.0, 0.0], flt(statuses=[ACTIVE]), 5)
                vector_index.search_text("note", flt(), 5)
                vector_index.count(flt())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(1000 * (i + 1),)) for i in range(2)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert vector_index.count(flt()) == 400
    assert vector_index.count(flt(statuses=[ARCHIVED])) == 20


def test_edge_searches_and_writes_during_a_compaction_neither_fail_nor_get_lost(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shard", DIM)
    index.upsert([point(i, text=f"note {i}") for i in range(1, 2001)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                assert len(index.search([1.0, 0.0, 0.0, 0.0], flt(), 5)) == 5
            except BaseException as exc:  # reported below
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for th in readers:
        th.start()
    writer = threading.Thread(target=lambda: index.upsert([point(5000, text="written meanwhile")]))
    compaction = threading.Thread(target=index.compact)
    compaction.start()
    writer.start()
    compaction.join()
    writer.join()
    stop.set()
    for th in readers:
        th.join()
    try:
        assert errors == []
        assert index.count(flt()) == 2001
    finally:
        index.close()
