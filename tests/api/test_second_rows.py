"""The read gate's second embedder (e5) on the real path: rows stored with the scope by the indexer
(`MEMSVC_SEARCH__SECOND_ROWS`) or by a reranking search (at most `second_fill` a search), read back
by every later search, shown in `why.rerank.second_cosine`, purged with the user."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from memsvc.config import SearchConfig
from memsvc.learn.second import ROWS_MODEL, SecondEmbedder
from memsvc.memory_os import MemoryOS
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
from storage.registry import build_memory_os
from storage.sql.name_vectors import SqlNameVectors
from tests.api.conftest import make_settings

TENANT = "tenant-e5"
TEXTS = ["I moved to Berlin in May, the flat is lovely.", "We went camping with the kids last weekend.",
         "My sister Ana is a nurse in Porto.", "I ran the Berlin marathon in 3 hours 41 minutes.",
         "Hey, how are you?", "I adopted a cat called Miso from the shelter."]
QUERY = "Where did Caroline move to?"


def build(tmp_path: Path, **search: object) -> MemoryOS:
    settings = make_settings(tmp_path)
    return build_memory_os(settings.model_copy(update={"search": SearchConfig(**search)}))  # type: ignore[arg-type]


def write(os_: MemoryOS, user: str) -> list[str]:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    req = WriteRequest(user_id=user, infer=False, messages=[
        MessageIn(id=f"{user}-{i}", role="user", name="Caroline", content=text, timestamp=t0 + timedelta(minutes=i))
        for i, text in enumerate(TEXTS)])
    ids = [m["id"] for m in os_.writer.write(TENANT, req).written]
    os_.outbox.drain()
    return [c.content for c in os_.records.get_memories(TENANT, ids)]


def stored(os_: MemoryOS, user: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
    return SqlNameVectors(os_.records.engine).get(TENANT, user, ROWS_MODEL, texts)  # type: ignore[attr-defined]


@pytest.fixture
def counted() -> Iterator[list[str]]:
    """Every text the e5 engine embeds as a passage while the test runs."""
    seen: list[str] = []
    original = SecondEmbedder.encode

    def encode(self: SecondEmbedder, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        seen.extend(texts)
        return original(self, texts, batch)

    SecondEmbedder.encode = encode  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        SecondEmbedder.encode = original  # type: ignore[method-assign]


@pytest.fixture
def queried() -> Iterator[list[str]]:
    """Every query the e5 engine embeds while the test runs."""
    seen: list[str] = []
    original = SecondEmbedder.encode_query

    def encode_query(self: SecondEmbedder, text: str) -> np.ndarray:
        seen.append(text)
        return original(self, text)

    SecondEmbedder.encode_query = encode_query  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        SecondEmbedder.encode_query = original  # type: ignore[method-assign]


def search(os_: MemoryOS, user: str) -> list[dict[str, object]]:
    res = os_.search(TENANT, SearchRequest(user_id=user, query=QUERY, preset="hybrid_temporal_rerank",
                                           explain=True, top_k=len(TEXTS)))
    return res.results


def test_the_indexer_stores_every_memorys_row_and_searches_read_them(tmp_path: Path, counted: list[str],
                                                                     queried: list[str]) -> None:
    os_ = build(tmp_path, second_rows="on")
    try:
        assert os_.second_rows is not None and os_.indexer.second is os_.second_rows
        assert os_.policies(TENANT)["read_gate"]["reranker"]["second_embedder"] == {
            "name": "multilingual-e5-small-q4", "rows_at_index": True, "fill_per_search": 32, "query": "embedded"}
        texts = write(os_, "ann")
        rows = stored(os_, "ann", texts)
        assert set(rows) == set(texts) and sorted(counted) == sorted(texts)  # each text embedded once, at index time
        e5 = SecondEmbedder()
        np.testing.assert_allclose(np.stack([rows[t] for t in texts]), e5.encode(texts), atol=1e-5)
        counted.clear()
        results = search(os_, "ann")
        assert counted == []  # the search read the stored rows
        assert queried == [QUERY]  # and embedded the query with e5 (the packaged artefact has no projection)
        q = e5.encode_query(QUERY)
        assert len(results) == len(TEXTS)
        for r in results:
            why = r["why"]["rerank"]  # type: ignore[index]
            assert why["second_cosine"] == pytest.approx(float(rows[r["content"]] @ q), abs=1e-5)  # type: ignore[index]
        assert "Berlin in May" in str(results[0]["content"])
        # purging the user deletes the rows with the scope's other rows
        os_.purge_user(TENANT, "ann")
        assert stored(os_, "ann", texts) == {}
    finally:
        os_.close()


def test_the_read_gates_context_columns_read_the_stored_rows_of_the_candidates(tmp_path: Path) -> None:
    from memsvc.learn.features import (
        CONTEXT_AT,
        NEIGHBOUR_AT,
        RERANK_FEATURES,
        context_columns,
        context_prescore,
    )

    os_ = build(tmp_path, second_rows="on")
    try:
        texts = write(os_, "cy")
        req = SearchRequest(user_id="cy", query=QUERY, preset="hybrid_temporal_rerank", top_k=len(TEXTS))
        cset = os_.reader.candidates(TENANT, req)
        assert cset is not None and cset.features is not None
        contents = [c.cube.content for c in cset.candidates]
        assert set(texts) <= set(contents)
        rows = stored(os_, "cy", contents)
        x = cset.features
        vectors = np.stack([rows[t] for t in contents])
        days = [(c.cube.event_time or c.cube.valid_from).date().isoformat() for c in cset.candidates]
        assert set(days) == {"2024-05-01"}  # the turns' timestamps: one day, one session
        expected = context_columns(context_prescore(x), vectors, days)
        np.testing.assert_allclose(x[:, CONTEXT_AT:NEIGHBOUR_AT], expected, rtol=1e-5, atol=1e-6)
        centroid = x[:, RERANK_FEATURES.index("context_centroid")]
        assert np.all(centroid != 0.0)  # every candidate's row was there to compare
        # one session: every candidate's day holds all the first look's mass but its own
        first_look = np.exp(context_prescore(x) - context_prescore(x).max())
        first_look /= first_look.sum()
        np.testing.assert_allclose(x[:, RERANK_FEATURES.index("context_day_mass")] + first_look, 1.0, rtol=1e-5)
    finally:
        os_.close()


def test_a_reranking_search_embeds_at_most_second_fill_rows_and_keeps_them(tmp_path: Path, counted: list[str]) -> None:
    # the default preset does not rerank: with `auto` the indexer embeds nothing
    os_ = build(tmp_path, second_fill=2)
    try:
        assert os_.second_rows is not None and os_.indexer.second is None
        assert os_.policies(TENANT)["read_gate"]["reranker"]["second_embedder"]["rows_at_index"] is False
        texts = write(os_, "bob")
        assert counted == [] and stored(os_, "bob", texts) == {}
        first = search(os_, "bob")
        assert len(counted) == 2 and len(stored(os_, "bob", texts)) == 2
        known = [r for r in first if "second_cosine" in r["why"]["rerank"]]  # type: ignore[operator]
        assert sorted(str(r["content"]) for r in known) == sorted(counted)  # the others read as unknown
        counted.clear()
        search(os_, "bob")
        assert len(counted) == 2 and len(stored(os_, "bob", texts)) == 4  # the next two; the first two read back
    finally:
        os_.close()


def test_without_a_gate_model_no_second_embedder_runs(tmp_path: Path, counted: list[str]) -> None:
    from memsvc.config import NoGates

    settings = make_settings(tmp_path)
    os_ = build_memory_os(settings.model_copy(update={"gates": NoGates(), "search": SearchConfig(second_rows="on")}))
    try:
        assert os_.second_rows is None and os_.indexer.second is None
        write(os_, "cy")
        search(os_, "cy")
        assert counted == []
    finally:
        os_.close()


def test_the_projected_artefact_runs_no_e5_pass_for_the_query(tmp_path: Path, queried: list[str]) -> None:
    from memsvc.config import LocalGates
    from memsvc.learn import gates as G

    settings = make_settings(tmp_path)
    os_ = build_memory_os(settings.model_copy(update={"gates": LocalGates(path=G.PROJECTED),
                                                      "search": SearchConfig(second_rows="on")}))
    try:
        gate = os_.gate
        assert gate is not None and gate.has("second")
        assert os_.policies(TENANT)["read_gate"]["reranker"]["second_embedder"]["query"] == "projected"
        texts = write(os_, "dee")
        results = search(os_, "dee")
        assert queried == []  # the query's e5 row is the projection of its MiniLM embedding
        q = gate.project(os_.embedder.embed_query(QUERY)[None])[0]
        assert float(q @ SecondEmbedder().encode_query(QUERY)) > 0.85  # near where e5 would put it
        rows = stored(os_, "dee", texts)
        for r in results:
            assert r["why"]["rerank"]["second_cosine"] == pytest.approx(  # type: ignore[index]
                float(rows[str(r["content"])] @ q), abs=1e-5)
        assert "Berlin in May" in str(results[0]["content"])
    finally:
        os_.close()


def test_a_query_embedded_beside_a_search_runs_on_a_capped_team_and_gives_the_same_row() -> None:
    """`query_soon`'s thread caps the engine's OpenMP team at `QUERY_THREADS` (the runtime the engine's
    parallel regions run in: torch's, loaded with global symbols, else the engine's own); a team's
    size is per thread, so any other thread keeps its own."""
    import ctypes
    import threading

    import torch  # noqa: F401 - loaded as in the service: its OpenMP runtime is the engine's then

    from memsvc.learn.second import QUERY_THREADS, SecondRows

    omp = ctypes.CDLL(None)

    def fresh_thread_team() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(omp.omp_get_max_threads()))
        t.start()
        t.join()
        return seen[0]

    before = fresh_thread_team()
    rows = SecondRows(None)
    row = rows.query_soon(QUERY)
    team = rows._pool.submit(omp.omp_get_max_threads).result()  # type: ignore[union-attr]
    assert team == min(QUERY_THREADS, before)
    assert fresh_thread_team() == before  # every other thread keeps the runtime's default
    np.testing.assert_allclose(row.result(), rows.query(QUERY), atol=1e-6)
