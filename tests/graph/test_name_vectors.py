"""Entity-name vectors kept in SQL: a scope's name index is rebuilt from them after a restart or an
eviction from the in-process cache, instead of embedding every entity name of the scope again."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from spacy.language import Language
from sqlalchemy import Engine, select

from memsvc.graph.extract import extract_graph
from memsvc.graph.ids import entity_id, normalize_name
from memsvc.graph.service import SYNONYM, GraphService
from memsvc.models import MemoryCube, MemoryType
from memsvc.ports import Embedder, VectorFilter
from storage.graph.sql import SqlGraphStore
from storage.sql import schema
from storage.sql.engine import sqlite_url
from storage.sql.name_vectors import SqlNameVectors
from storage.sql.records import SqlRecordStore

T, U = "t1", "u1"
WHEN = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The engine of a migrated, empty record store (PostgreSQL: the session database, as the record
    store tests leave it)."""
    url = sqlite_url(tmp_path / "memsvc.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlRecordStore.from_url(url)
    store.migrate()
    with store.engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(table.delete())
    yield store.engine
    store.close()


class Counting:
    """The real embedder, recording how many texts each call embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.calls = inner, []
        self.dim, self.model_name = inner.dim, inner.model_name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def cube(mid: str, content: str) -> MemoryCube:
    return MemoryCube(id=mid, tenant=T, user_id=U, type=MemoryType.EPISODIC, content=content, source_ids=[mid],
                      event_time=WHEN, valid_from=WHEN)


def test_vectors_round_trip_by_scope_and_model_and_the_first_stored_vector_stays(engine: Engine) -> None:
    store = SqlNameVectors(engine)
    a, b = np.arange(4, dtype=np.float32) / 7, np.ones(4, dtype=np.float32)
    long_name = "Chicago, Illinois — a name with no length bound " * 20
    store.put(T, U, "m1", {"Obama": a, long_name: b})
    store.put(T, U, "m1", {"Obama": b})  # already stored: kept as first written
    got = store.get(T, U, "m1", ["Obama", "Merkel", "Obama"])
    assert list(got) == ["Obama"] and got["Obama"].dtype == np.float32
    np.testing.assert_array_equal(got["Obama"], a)
    np.testing.assert_array_equal(store.get(T, U, "m1", [long_name])[long_name], b)
    assert store.get(T, U, "m2", ["Obama"]) == {}  # another model's vectors are other vectors
    assert store.get(T, "u2", "m1", ["Obama"]) == {}  # and another scope's
    assert len(store.get(T, U, "m1", [f"n{i}" for i in range(1200)] + ["Obama"])) == 1  # chunked IN lists
    with engine.connect() as conn:  # hashes and vectors only: no name text is stored
        rows = conn.execute(select(schema.name_vectors)).all()
    assert len(rows) == 2 and not any(b"Obama" in bytes(r.vector) or "Obama" in r.key for r in rows)
    counts = SqlRecordStore(engine).purge_user(T, U)  # a user's purge takes them with the rest
    assert counts["name_vectors"] == 2 and store.get(T, U, "m1", ["Obama", long_name]) == {}


def test_a_restarted_or_evicted_scope_reads_its_names_back_instead_of_embedding_them(
    engine: Engine, nlp: Language, embedder: Embedder
) -> None:
    graph = SqlGraphStore(engine)
    counting = Counting(embedder)
    service = GraphService(graph, nlp, embedder=counting, name_vectors=SqlNameVectors(engine))
    for mid, text in [("m1", "Barack Obama visited Chicago."), ("m2", "Obama met Angela Merkel.")]:
        graph.upsert(T, U, *service.extract([cube(mid, text)]))
    assert counting.calls == [2, 2]  # each write embeds its new names only
    service._names_by_scope.clear()  # as when 64 other scopes pushed this one out of the cache
    graph.upsert(T, U, *service.extract([cube("m3", "Michelle Obama spoke in Chicago.")]))
    assert counting.calls == [2, 2, 1]  # the 4 stored names were read back, the new one embedded
    restarted = GraphService(graph, nlp, embedder=counting, name_vectors=SqlNameVectors(engine))
    graph.upsert(T, U, *restarted.extract([cube("m4", "Angela Merkel visited Berlin.")]))
    assert counting.calls == [2, 2, 1, 1]  # a fresh process too: only "Berlin"
    syn = {(r.subject_id, r.object_id) for r in graph.relations(T, U).items if r.predicate == SYNONYM}
    eid = lambda name: entity_id(T, U, normalize_name(name))  # noqa: E731
    assert (eid("Obama"), eid("Barack Obama")) in syn  # the links are those of freshly embedded names
    # the read path reads the stored vectors back and stores none: a query's unmatched entity
    # names are embedded for the match only
    restarted._names_by_scope.clear()
    query = "What did Barak Obamma say?"
    asked = [e.name for e in extract_graph(nlp, query).entities]
    assert asked and not graph.find_entities(T, U, extract_graph(nlp, query).names())
    before = len(counting.calls)
    restarted.retrieve(T, U, query, [], VectorFilter(tenant=T, user_id=U), 5)
    assert counting.calls[before:] == [len(asked)]  # the query's names; the scope's came from SQL
    assert len(restarted._names_by_scope[(T, U)].ids) == len(graph.catalog(T, U).entity_ids)
    assert SqlNameVectors(engine).get(T, U, embedder.model_name, asked) == {}
    graph.close()
