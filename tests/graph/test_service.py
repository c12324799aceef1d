"""GraphService: synonym edges, embedding match of query entities, named paths, LLM wiring."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from spacy.language import Language

from memsvc.config import OpenAILLM, Settings
from memsvc.graph.ids import entity_id, normalize_name, relation_id
from memsvc.graph.service import SYNONYM, GraphService, synonym_pairs
from memsvc.models import Entity, MemoryCube, MemoryType, Mention
from memsvc.ports import Completion, Embedder, GraphStore, VectorFilter
from storage.graph.sql import SqlGraphStore
from storage.llm import OpenAIChat
from storage.registry import extraction_llm, graph_functions
from storage.sql import schema
from storage.sql.engine import make_engine, sqlite_url

T, U = "t1", "u1"
WHEN = datetime(2024, 3, 1, tzinfo=UTC)


def eid(name: str) -> str:
    return entity_id(T, U, normalize_name(name))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GraphStore]:
    eng = make_engine(sqlite_url(tmp_path / "graph.db"))
    schema.metadata.create_all(eng)
    s = SqlGraphStore(eng)
    yield s
    s.close()
    eng.dispose()


def cube(mid: str, content: str) -> MemoryCube:
    return MemoryCube(id=mid, tenant=T, user_id=U, type=MemoryType.EPISODIC, content=content, source_ids=[mid],
                      event_time=WHEN, valid_from=WHEN)


def write(service: GraphService, store: GraphStore, *cubes: MemoryCube) -> None:
    store.upsert(T, U, *service.extract(list(cubes)))


def test_synonym_pairs_threshold_top_and_new_pairs_once() -> None:
    old = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    s = np.float32(np.sqrt(0.5))
    new = np.array([[1.0, 0.0], [s, s], [0.0, 1.0]], dtype=np.float32)
    pairs = synonym_pairs(new, old, threshold=0.7, top=5)
    # columns: old 0, old 1, then new 0..2 at 2..4; new-new listed once (row < column)
    assert [(i, j, round(c, 3)) for i, j, c in pairs] == [
        (0, 0, 1.0), (0, 2 + 1, 0.707),
        (1, 0, 0.707), (1, 1, 0.707), (1, 2 + 2, 0.707),
        (2, 1, 1.0),
    ]
    assert [(i, j) for i, j, _ in synonym_pairs(new, old, threshold=0.7, top=1)] == [(0, 0), (1, 0), (2, 1)]
    assert synonym_pairs(new[:0], old, 0.7, 5) == []


def test_new_entities_link_to_close_names_incrementally(
    store: GraphStore, nlp: Language, embedder: Embedder
) -> None:
    service = GraphService(store, nlp, embedder=embedder, synonym_threshold=0.85)
    calls: list[int] = []
    real_embed = embedder.embed

    class Counting:
        dim = embedder.dim
        model_name = embedder.model_name

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            calls.append(len(texts))
            return real_embed(texts)

        def embed_query(self, text: str) -> np.ndarray:
            return embedder.embed_query(text)

    service.embedder = Counting()
    write(service, store, cube("m1", "Barack Obama visited Chicago."))
    write(service, store, cube("m2", "Obama met Angela Merkel."))
    syn = [r for r in store.relations(T, U).items if r.predicate == SYNONYM]
    assert [(r.subject_id, r.object_id, r.memory_id) for r in syn] == [(eid("Obama"), eid("Barack Obama"), None)]
    assert syn[0].id == relation_id(T, U, eid("Obama"), SYNONYM, eid("Barack Obama"), None)
    assert 0.9 < syn[0].weight <= 1.0
    # each write embeds only its new names (stored ones are cached by entity id)
    assert calls == [2, 2]
    write(service, store, cube("m3", "Obama visited Chicago again."))  # nothing new: nothing embedded
    assert calls == [2, 2]
    GraphService(store, nlp, embedder=service.embedder).extract([cube("m4", "Michelle Obama spoke.")])
    assert calls == [2, 2, 4, 1]  # a fresh process embeds the 4 stored names once, then the new one


class SnapshotCounting:
    """The real store, counting the matrix snapshots asked of it."""

    def __init__(self, inner: GraphStore) -> None:
        self.inner, self.snapshots = inner, 0

    def snapshot(self, tenant: str, user_id: str) -> object:
        self.snapshots += 1
        return self.inner.snapshot(tenant, user_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_writes_build_no_matrices_and_forget_deleted_names(
    store: GraphStore, nlp: Language, embedder: Embedder
) -> None:
    counting = SnapshotCounting(store)
    service = GraphService(counting, nlp, embedder=embedder, synonym_threshold=0.85)  # type: ignore[arg-type]
    write(service, store, cube("m1", "Barack Obama visited Chicago."))
    write(service, store, cube("m2", "Angela Merkel flew to Berlin."))
    assert counting.snapshots == 0  # supersession and synonyms read the catalog
    store.delete_memories(T, ["m1"])  # Barack Obama and Chicago leave the graph
    write(service, store, cube("m3", "Obama spoke in Berlin."))
    syn = [(r.subject_id, r.object_id) for r in store.relations(T, U).items if r.predicate == SYNONYM]
    assert syn == []  # no edge to the deleted "Barack Obama"
    write(service, store, cube("m4", "Barack Obama came back."))
    syn = [(r.subject_id, r.object_id) for r in store.relations(T, U).items if r.predicate == SYNONYM]
    assert syn == [(eid("Barack Obama"), eid("Obama"))]
    assert counting.snapshots == 0


def test_query_entities_fall_back_to_embedding_match(store: GraphStore, nlp: Language, embedder: Embedder) -> None:
    service = GraphService(store, nlp, embedder=embedder, query_match_threshold=0.8)
    write(service, store, cube("m1", "Caroline joined the New York City marathon."),
          cube("m2", "Melanie painted a lake."))
    flt = VectorFilter(tenant=T, user_id=U)
    hits = service.retrieve(T, U, "What did she do in NYC?", [], flt, 5)
    assert [h.memory_id for h in hits][:1] == ["m1"]
    assert hits[0].path == ["New York City"]
    strict = GraphService(store, nlp, embedder=embedder, query_match_threshold=0.99)
    assert strict.retrieve(T, U, "What did she do in NYC?", [], flt, 5) == []


def test_graph_path_names_every_hop(store: GraphStore, nlp: Language) -> None:
    service = GraphService(store, nlp)
    write(service, store, cube("m1", "Alice adopted Miso."), cube("m2", "Miso was born in Lyon."),
          cube("m3", "Lyon hosts a film festival."))
    hits = {h.memory_id: h.path for h in service.retrieve(T, U, "Tell me about Alice.", [], VectorFilter(T, U), 5)}
    assert hits["m1"] == ["Alice"]
    assert hits["m2"] == ["Alice", "Miso"]
    assert hits["m3"] == ["Alice", "Miso", "Lyon"]


def test_dense_hits_seed_their_memory_nodes(store: GraphStore, nlp: Language) -> None:
    store.upsert(T, U, [Entity(id=eid(n), tenant=T, user_id=U, name=n) for n in ("Alice", "Bob")], [],
                 [Mention(tenant=T, user_id=U, memory_id=m, entity_id=eid(n))
                  for m, n in (("m1", "Alice"), ("m2", "Bob"), ("m3", "Bob"))])
    hits = GraphService(store, nlp).retrieve(T, U, "nothing named here", ["m3"], VectorFilter(T, U), 5)
    assert [h.memory_id for h in hits] == ["m3", "m2"]  # m1 is not connected to the seed
    assert all(h.path == [] for h in hits)


class CannedLLM:
    model = "canned"

    def complete(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 512,
        temperature: float = 0.0, json_mode: bool = False,
    ) -> Completion:
        if "named_entities" in messages[-1]["content"]:
            return Completion('{"triples": [["Alice", "adopted", "Miso"]]}')
        return Completion('{"named_entities": ["Alice", "Miso"]}')


def test_wiring_uses_openie_with_an_llm(store: GraphStore, embedder: Embedder) -> None:
    extract = graph_functions(store, embedder, llm=CannedLLM()).extract
    ents, rels, ments = extract([cube("m1", "Alice: I adopted a kitten called Miso.")])
    assert [e.name for e in ents] == ["Alice", "Miso"]
    assert [(r.subject_id, r.predicate, r.object_id) for r in rels] == [(eid("alice"), "adopted", eid("miso"))]
    assert extraction_llm(None) is None and extraction_llm(Settings()) is None
    llm = extraction_llm(Settings(llm=OpenAILLM(base_url="http://127.0.0.1:9/v1", api_key="x")))
    assert isinstance(llm, OpenAIChat)


def test_hub_exponent_scales_memory_entity_edges(store: GraphStore, nlp: Language) -> None:
    from memsvc.graph.ppr import rank_memories_joint

    pairs = (("m1", "Alice"), ("m1", "Bob"), ("m2", "Alice"), ("m3", "Alice"), ("m3", "Carl"))
    store.upsert(T, U, [Entity(id=eid(n), tenant=T, user_id=U, name=n) for n in ("Alice", "Bob", "Carl")], [],
                 [Mention(tenant=T, user_id=U, memory_id=m, entity_id=eid(n)) for m, n in pairs])
    snap = store.snapshot(T, U)
    seeds = np.zeros(3)
    seeds[snap.entity_ids.index(eid("Bob"))] = 1.0
    for x in (0.0, 1.0):
        hits = GraphService(store, nlp, hub_exponent=x).retrieve(T, U, "Where is Bob?", [], VectorFilter(T, U), 5)
        counts = np.asarray(snap.mentions.sum(axis=0)).ravel()  # Alice 3, Bob 1, Carl 1
        scaled = sp.csr_matrix(snap.mentions @ sp.diags(counts ** -x))
        want = rank_memories_joint(snap.adjacency, scaled, seeds, np.zeros(3), 0.5)
        assert {h.memory_id: h.score for h in hits} == pytest.approx(
            {m: float(want[i]) for i, m in enumerate(snap.memory_ids)})
        assert [h.memory_id for h in hits][0] == "m1"
