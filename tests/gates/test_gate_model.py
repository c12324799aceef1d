"""The `GateModel` port on both kinds, with the packaged (trained) artefact: in-process torch and
a `memsvc gates serve` worker on loopback, answering the same calls with the same numbers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from api.gates_server import create_gates_app
from memsvc.learn import cross as X
from memsvc.learn import gates as G
from memsvc.learn.features import (
    RERANK_FEATURES,
    WRITE_GATE_FEATURES,
    Candidate,
    rerank_features,
    with_previous,
    write_features,
)
from memsvc.models import Role
from memsvc.ports import GateModel
from storage.gates.local import TorchGateModel
from storage.gates.remote import RemoteGateModel
from tests.conftest import free_port

# The packaged artefacts' heads: all but the projection (its reranker reads the query embedded by e5),
# and the cross-encoder stage (`memsvc train cross`)
PACKAGED_HEADS = (*(h for h in G.HEADS if h != "second"), "cross")


@pytest.fixture(scope="module")
def local() -> TorchGateModel:
    return TorchGateModel(device="cpu")


@pytest.fixture(scope="module")
def worker(local: TorchGateModel) -> Iterator[str]:
    yield from _serve(local)


def _serve(model: GateModel, port: int | None = None, token: str | None = None) -> Iterator[str]:
    """`memsvc gates serve`'s app over `model` on a loopback port, for as long as the caller holds it."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_gates_app(model, token=token), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def projected_local() -> TorchGateModel:
    return TorchGateModel(G.PROJECTED, device="cpu")


@pytest.fixture(scope="module")
def projected_worker(projected_local: TorchGateModel) -> Iterator[str]:
    yield from _serve(projected_local)


def _kind(request: pytest.FixtureRequest, local: TorchGateModel, worker: str) -> Iterator[GateModel]:
    """`local` itself, or a remote port on its worker (the fixture named `worker`)."""
    if request.param == "local":
        yield local
        return
    remote = RemoteGateModel(request.getfixturevalue(worker))
    yield remote
    remote.close()


@pytest.fixture(params=["local", "remote"])
def projected(request: pytest.FixtureRequest, projected_local: TorchGateModel) -> Iterator[GateModel]:
    """The artefact whose reranker reads the projected query (`second` head), on both kinds."""
    yield from _kind(request, projected_local, "projected_worker")


@pytest.fixture(params=["local", "remote"])
def gate(request: pytest.FixtureRequest, local: TorchGateModel) -> Iterator[GateModel]:
    yield from _kind(request, local, "worker")


def _candidates(adapted: tuple[float, float, float] = (0.38, 0.66, 0.15)) -> list[Candidate]:
    def c(content: str, speaker: str, dense: float, rank: int, kw: int | None, moved: float) -> Candidate:
        return Candidate(type="episodic", content=content, speaker=speaker, derived=False, tokens=10,
                         event_epoch=1.7e9 + rank, dense=dense, keyword=(8.0 / kw) if kw else None, graph=None,
                         dense_rank=rank, keyword_rank=kw, graph_rank=None, fused=2 / (60 + rank), fused_rank=rank,
                         adapted=moved)
    return [
        c("Melanie: We went camping with the kids last weekend.", "Melanie", 0.41, 2, None, adapted[0]),
        c("Caroline: I moved to Berlin in May, I love my new flat.", "Caroline", 0.62, 1, 1, adapted[1]),
        c("Melanie: Pottery class was fun, I made a bowl.", "Melanie", 0.18, 3, None, adapted[2]),
    ]


def test_describe_reports_the_packaged_manifest(gate: GateModel) -> None:
    info = gate.describe()
    manifest = json.loads((G.PACKAGED / "manifest.json").read_text())
    assert info["name"] == "memsvc-gates" and info["version"] == manifest["version"]
    assert info["metrics"] == manifest["metrics"] and info["data"] == manifest["data"]
    assert info["heads"] == ["cross", "query", "rerank", "route", "write"]  # the query's e5 row is embedded, not projected
    assert all(gate.has(h) for h in PACKAGED_HEADS) and not gate.has("second") and not gate.has("nonsense")


def test_rerank_scores_every_list_and_prefers_the_named_speaker_and_the_matching_words(gate: GateModel) -> None:
    x = rerank_features("Where did Caroline move to?", _candidates())
    empty = np.zeros((0, len(RERANK_FEATURES)), dtype=np.float32)
    scores = gate.rerank([x, empty, x[:1]])
    assert [len(s) for s in scores] == [3, 0, 1]
    assert int(np.argmax(scores[0])) == 1
    assert scores[2][0] == pytest.approx(gate.rerank([x[:1]])[0][0], abs=1e-5)


def test_local_and_remote_answer_the_same_numbers(local: TorchGateModel, worker: str) -> None:
    remote = RemoteGateModel(worker)
    x = rerank_features("When did Melanie go camping?", _candidates())
    np.testing.assert_allclose(remote.rerank([x])[0], local.rerank([x])[0], atol=1e-5)
    emb = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    side = with_previous(emb, np.stack([write_features("user", t) for t in ("hi!", "I adopted a dog named Rex.", "ok",
                                                                          "My sister is a nurse.")]))
    p_local, p_remote = local.memorability(emb, side), remote.memorability(emb, side)
    np.testing.assert_allclose(p_remote, p_local, atol=1e-5)
    assert p_local.shape == (4,) and ((p_local > 0) & (p_local < 1)).all()
    np.testing.assert_allclose(remote.adapt(emb[:2]), local.adapt(emb[:2]), atol=1e-5)
    r = local.route(emb[:2], np.zeros((2, 5), dtype=np.float32))
    np.testing.assert_allclose(remote.route(emb[:2], np.zeros((2, 5), dtype=np.float32)), r, atol=1e-5)
    assert r.shape == (2, 3)
    remote.close()


# Four LoCoMo-like turns and the question each answers (question i -> turn i).
TURNS = ["Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
         "Melanie: I painted a lake sunrise last year, it's my favourite.",
         "Caroline: I'm keen on counseling or working in mental health.",
         "Melanie: We're going camping with the kids next month."]
QUESTIONS = ["When did Caroline go to the LGBTQ support group?", "What did Melanie paint?",
             "What career path is Caroline considering?", "Where is Melanie going with her kids?"]

def test_the_query_adapter_moves_questions_towards_the_turns_that_answer_them(gate: GateModel) -> None:
    from memsvc.config import Settings
    from storage.registry import build_embedder

    embedder = build_embedder(Settings())
    turns, questions = TURNS, QUESTIONS
    d = embedder.embed(turns)
    q = np.stack([embedder.embed_query(t) for t in questions])
    moved = gate.adapt(q)
    assert moved.shape == q.shape and np.allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(moved, q, atol=1e-3)  # a trained adapter is not the identity
    # every question still finds its own turn first (how much the adapter helps is measured on the
    # held-out folds of the development data and kept in the manifest)
    assert list(np.argmax(moved @ d.T, axis=1)) == [0, 1, 2, 3]
    cv = gate.describe()["metrics"]["query"]
    assert cv["mrr_adapted"] > cv["mrr_plain"]


def test_the_projection_puts_a_question_where_e5_embeds_it_and_ranks_turns_as_e5_does(projected: GateModel) -> None:
    gate = projected
    assert gate.describe()["heads"] == ["cross", "query", "rerank", "route", "second", "write"]
    from memsvc.config import Settings
    from memsvc.learn.second import SecondEmbedder
    from storage.registry import build_embedder

    embedder, e5 = build_embedder(Settings()), SecondEmbedder()
    turns, questions = TURNS, QUESTIONS
    projected = gate.project(np.stack([embedder.embed_query(t) for t in questions]))
    embedded = np.stack([e5.encode_query(t) for t in questions])
    assert projected.shape == (4, 384) and np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-4)
    own = (projected * embedded).sum(1)
    assert (own > 0.85).all(), own  # each question lands near its own e5 row ...
    assert (own > (projected @ embedded.T).max(1) - 1e-6).all()  # ... nearer than to the others'
    rows = e5.encode(turns)
    assert list(np.argmax(projected @ rows.T, axis=1)) == list(np.argmax(embedded @ rows.T, axis=1)) == [0, 1, 2, 3]
    cv = gate.describe()["metrics"]["second"]
    assert cv["n"] > 1000 and cv["cosine_to_e5_query"] > 0.8  # held-out questions of the development data
    empty = gate.project(np.zeros((0, 384), dtype=np.float32))
    assert empty.shape == (0, 384)


def test_the_projected_artefact_answers_the_same_numbers_on_both_kinds(projected_local: TorchGateModel,
                                                                     projected_worker: str) -> None:
    remote = RemoteGateModel(projected_worker)
    emb = np.random.default_rng(1).normal(size=(3, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(remote.project(emb), projected_local.project(emb), atol=1e-5)
    x = rerank_features("Where did Caroline move to?", _candidates())
    np.testing.assert_allclose(remote.rerank([x])[0], projected_local.rerank([x])[0], atol=1e-5)
    r = httpx.post(f"{projected_worker}/v1/gates/second", json={"embeddings": []})
    assert r.status_code == 200 and r.json() == {"q": []}
    r = httpx.post(f"{projected_worker}/v1/gates/second", json={"embeddings": [[0.0] * 383]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    remote.close()


MEMORIES = ["(20 May 2023) Caroline: I moved to Berlin in May, the flat is lovely.",
            "(20 May 2023) Melanie: Nice! We went camping with the kids last weekend.",
            "(20 May 2023) Caroline: Hey, how are you?"]


def test_the_cross_stage_reads_the_query_and_each_memory_together_on_both_kinds(gate: GateModel,
                                                                                local: TorchGateModel) -> None:
    assert gate.has("cross")
    scores = gate.cross("Where did Caroline move to?", MEMORIES)
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert scores[0] > max(scores[1:])  # the memory that answers, above a neighbour and small talk
    # the same numbers on both kinds, and as the artefact's model scores them itself
    np.testing.assert_allclose(scores, local.cross("Where did Caroline move to?", MEMORIES), atol=1e-5)
    _, model = X.load(X.PACKAGED)
    np.testing.assert_allclose(scores, model.score("Where did Caroline move to?", MEMORIES), atol=1e-4)
    assert gate.cross("Where did Caroline move to?", []).shape == (0,)
    other = gate.cross("What did Melanie do with her kids?", MEMORIES)
    assert int(np.argmax(other)) == 1


def test_the_cross_stage_in_bf16_orders_as_in_fp32(local: TorchGateModel) -> None:
    """The precision a GPU worker runs it in (bf16), checked on the CPU: the same order, logits close."""
    half = TorchGateModel(device="cpu", precision="bf16")
    query = "Where did Caroline move to?"
    fp32, bf16 = local.cross(query, MEMORIES), half.cross(query, MEMORIES)
    assert bf16.dtype == np.float32 and list(np.argsort(-bf16)) == list(np.argsort(-fp32))
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_the_cross_manifest_is_reported_and_the_stage_loads_at_its_first_use(tmp_path: Path) -> None:
    model = TorchGateModel(device="cpu")
    manifest = json.loads((X.PACKAGED / "manifest.json").read_text())
    info = model.describe()["cross"]
    assert info["name"] == "memsvc-cross" and info["metrics"] == manifest["metrics"] and info["data"] == manifest["data"]
    assert info["loaded"] is False and model.describe()["specs"]["cross"] == manifest["heads"]["cross"]
    model.cross("Where did Caroline move to?", MEMORIES[:1])
    assert model.describe()["cross"]["loaded"] is True
    without = TorchGateModel(device="cpu", cross=False)
    assert not without.has("cross") and "cross" not in without.describe() and "cross" not in without.describe()["heads"]
    with pytest.raises(FileNotFoundError, match="memsvc train cross"):
        TorchGateModel(device="cpu", cross=tmp_path / "nothing-here")


def test_the_worker_refuses_bad_cross_calls_by_name(worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = httpx.post(f"{worker}/v1/gates/cross", json={"query": "Where did Caroline move?", "texts": []})
    assert ok.status_code == 200 and ok.json() == {"scores": []}
    for body in ({"query": "", "texts": ["a"]}, {"query": "q", "texts": [1.5]}, {"query": "q"},
                 {"query": "q", "texts": ["a"], "extra": 1}):
        r = httpx.post(f"{worker}/v1/gates/cross", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", body
    r = httpx.post(f"{worker}/v1/gates/cross", json={"query": "q", "texts": ["x" * 20_001]})
    assert r.status_code == 422 and "at most 20000 characters" in r.json()["error"]["message"]
    r = httpx.post(f"{worker}/v1/gates/cross", json={"query": "q", "texts": ["a"] * 513})
    assert r.status_code == 422


def test_a_worker_without_the_cross_stage_refuses_it_and_its_clients_do_not_ask() -> None:
    served = _serve(TorchGateModel(device="cpu", cross=False))
    url = next(served)
    try:
        r = httpx.post(f"{url}/v1/gates/cross", json={"query": "q", "texts": ["a"]})
        assert r.status_code == 422 and "no cross-encoder stage" in r.json()["error"]["message"]
        remote = RemoteGateModel(url)
        assert remote.has("rerank") and not remote.has("cross")
        remote.close()
    finally:
        next(served, None)


def test_a_worker_without_the_projection_refuses_it(worker: str) -> None:
    r = httpx.post(f"{worker}/v1/gates/second", json={"embeddings": [[0.0] * 384]})
    assert r.status_code == 422 and "no second-embedder projection" in r.json()["error"]["message"]


def test_the_worker_refuses_malformed_batches_with_the_error_shape(worker: str) -> None:
    wrong_width = {"lists": [[[0.0] * (len(RERANK_FEATURES) - 1)]]}
    r = httpx.post(f"{worker}/v1/gates/rerank", json=wrong_width)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = httpx.post(f"{worker}/v1/gates/query", json={"embeddings": [[0.0] * 383]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = httpx.post(f"{worker}/v1/gates/write", json={"embeddings": [[0.0] * 384], "side": []})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = httpx.post(f"{worker}/v1/gates/write", json={"embeddings": [[0.0] * 384], "side": [[0.0] * len(WRITE_GATE_FEATURES)],
                                                      "extra": 1})
    assert r.status_code == 422


def test_the_worker_names_ragged_and_mis_sized_rows_instead_of_failing(worker: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    width = len(WRITE_GATE_FEATURES)
    bad = [
        ("/v1/gates/rerank", {"lists": [[[0.0] * len(RERANK_FEATURES), [0.0] * 3]]}, "same number of columns"),
        ("/v1/gates/write", {"embeddings": [[0.0] * 384, [0.0] * 3], "side": [[0.0] * width] * 2}, "same number of columns"),
        ("/v1/gates/write", {"embeddings": [[0.1] * 10], "side": [[0.0] * width]}, "expected 384 columns, got 10"),
        ("/v1/gates/route", {"embeddings": [[0.1] * 10], "side": [[0.0] * 5]}, "expected 384 columns, got 10"),
    ]
    for path, body, message in bad:
        r = httpx.post(f"{worker}{path}", json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_input" and message in r.json()["error"]["message"]
    import api.gates_server as server

    monkeypatch.setattr(server, "MAX_ROWS", 3)  # the limit counts candidates over all lists of a call
    row = [0.0] * len(RERANK_FEATURES)
    r = httpx.post(f"{worker}/v1/gates/rerank", json={"lists": [[row, row], [row, row]]})
    assert r.status_code == 422 and "over all lists" in r.json()["error"]["message"]


def test_an_empty_batch_gets_empty_answers_of_the_same_shape_on_both_kinds(gate: GateModel) -> None:
    emb = np.zeros((0, 384), dtype=np.float32)
    assert gate.memorability(emb, np.zeros((0, len(WRITE_GATE_FEATURES)), np.float32)).shape == (0,)
    assert gate.route(emb, np.zeros((0, 5), np.float32)).shape == (0, 3)
    assert gate.adapt(emb).shape == (0, 384)
    assert [len(s) for s in gate.rerank([np.zeros((0, len(RERANK_FEATURES)), np.float32)])] == [0]


def test_the_worker_answers_an_empty_batch(worker: str) -> None:
    for path, body in (("/v1/gates/write", {"embeddings": [], "side": []}), ("/v1/gates/route", {"embeddings": [], "side": []}),
                       ("/v1/gates/query", {"embeddings": []}), ("/v1/gates/rerank", {"lists": [[], []]})):
        r = httpx.post(f"{worker}{path}", json=body)
        assert r.status_code == 200, (path, r.text)
        assert list(r.json().values())[0] in ([], [[], []])


def test_a_worker_with_a_token_serves_only_nodes_that_send_it(local: TorchGateModel) -> None:
    served = _serve(local, token="s3cret-gates")
    url = next(served)
    try:
        r = httpx.post(f"{url}/v1/gates/write", json={"embeddings": [], "side": []})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert httpx.get(f"{url}/v1/gates", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # liveness needs no token
        for token in (None, "wrong"):
            remote = RemoteGateModel(url, token=token, retry_s=3600)
            assert not any(remote.has(h) for h in G.HEADS) and remote.describe()["connected"] is False
            remote.close()
        remote = RemoteGateModel(url, token="s3cret-gates")
        assert all(remote.has(h) for h in PACKAGED_HEADS) and "s3cret" not in json.dumps(remote.describe())
        x = rerank_features("Where did Caroline move?", _candidates())
        np.testing.assert_allclose(remote.rerank([x])[0], local.rerank([x])[0], atol=1e-5)
        remote.close()
    finally:
        next(served, None)


def test_an_unreachable_worker_serves_no_head_and_its_calls_are_backend_errors() -> None:
    from memsvc.errors import BackendUnavailable

    remote = RemoteGateModel(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, retry_s=3600)
    assert not any(remote.has(h) for h in G.HEADS)
    assert remote.describe()["connected"] is False and remote.describe()["heads"] == []
    with pytest.raises(BackendUnavailable):
        remote.rerank([np.zeros((1, len(RERANK_FEATURES)), np.float32)])
    remote.close()


class _SlowRerank:
    """The packaged model behind a worker whose rerank hangs (an overloaded or wedged GPU host)."""

    def __init__(self, model: TorchGateModel, seconds: float) -> None:
        self.model, self.seconds = model, seconds

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def rerank(self, lists: list[np.ndarray]) -> list[np.ndarray]:
        time.sleep(self.seconds)
        return self.model.rerank(lists)


def test_a_worker_that_hangs_costs_one_timeout_per_retry_window_not_one_per_call(local: TorchGateModel) -> None:
    from memsvc.errors import BackendUnavailable

    served = _serve(_SlowRerank(local, 2.0))  # type: ignore[arg-type]
    url = next(served)
    try:
        x = rerank_features("Where did Caroline move?", _candidates())
        emb = np.zeros((1, 384), np.float32)
        side = np.zeros((1, len(WRITE_GATE_FEATURES)), np.float32)
        remote = RemoteGateModel(url, timeout_s=0.3, retry_s=0.8)
        assert remote.memorability(emb, side).shape == (1,)
        t = time.monotonic()
        with pytest.raises(BackendUnavailable):
            remote.rerank([x])  # waits out the timeout
        assert time.monotonic() - t >= 0.3
        t = time.monotonic()
        with pytest.raises(BackendUnavailable, match="asked again"):
            remote.memorability(emb, side)  # not sent: the worker did not answer just before
        assert time.monotonic() - t < 0.1
        time.sleep(0.9)  # past retry_s: the next call is sent again
        assert remote.memorability(emb, side).shape == (1,)
        remote.close()
    finally:
        next(served, None)


def _admin_policies_page(os_: object) -> str:
    """The admin UI's policies page of tenant `t`, through a real admin login."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.auth import create_key
    from tests.admin.conftest import csrf_of

    key = create_key(os_.records, "t", admin=True)[1]  # type: ignore[attr-defined]
    c = TestClient(create_app(memory_os=os_), base_url="http://admin.test")  # type: ignore[arg-type]
    page = c.get("/admin/login")
    r = c.post("/admin/login", data={"key": key, "csrf_token": csrf_of(page.text), "next": "/admin"},
               follow_redirects=False)
    assert r.status_code == 303
    r = c.get("/admin/policies")
    assert r.status_code == 200
    return r.text


def test_a_node_started_before_its_gate_worker_uses_the_worker_once_it_answers(local: TorchGateModel,
                                                                             tmp_path: Path) -> None:
    """An API node that starts while its gate worker is not up yet runs the heuristic twins, and asks
    the worker again (at most every `retry_s`) until it answers; from then on its heads run."""
    from memsvc.config import RemoteGates, Settings
    from memsvc.schemas import MessageIn, WriteRequest
    from memsvc.write.stages import heuristic_gate
    from storage.registry import build_memory_os

    port = free_port()
    os_ = build_memory_os(Settings(data_dir=tmp_path, gates=RemoteGates(url=f"http://127.0.0.1:{port}",
                                                                        timeout_s=1.0, retry_s=0.2)))
    served = None
    try:
        assert os_.policies("t")["gates"]["connected"] is False
        assert os_.policies("t")["read_gate"]["reranker"]["kind"] == "none"
        assert "not known yet: the worker has not answered" in _admin_policies_page(os_)
        text = "I moved to Berlin in May."
        (w,) = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="m1", role="user", name="Caroline", content=text)])).written
        assert w["importance"] == heuristic_gate(Role.USER, text).importance
        served = _serve(local, port)
        next(served)
        time.sleep(0.3)  # past retry_s: the next use asks the worker again
        (w,) = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="m2", role="user", name="Caroline", content=text)])).written
        assert w["importance"] != heuristic_gate(Role.USER, text).importance  # the worker's write head
        policies = os_.policies("t")
        assert policies["gates"]["connected"] is True and policies["gates"]["heads"] == sorted(PACKAGED_HEADS)
        assert policies["read_gate"]["reranker"]["kind"] == "learned"
    finally:
        os_.close()
        if served is not None:
            next(served, None)


def test_memory_os_with_a_remote_worker_gates_writes_and_reranks_searches(worker: str, tmp_path: Path) -> None:
    from memsvc.config import RemoteGates, Settings
    from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
    from storage.registry import build_memory_os

    os_ = build_memory_os(Settings(data_dir=tmp_path, gates=RemoteGates(url=worker)))
    try:
        assert os_.policies("t")["gates"]["kind"] == "remote"
        written = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="m1", role="user", name="Caroline", content="I moved to Berlin in May."),
            MessageIn(id="m2", role="user", name="Melanie", content="We went camping last weekend."),
        ])).written
        assert all(0.0 < w["importance"] < 1.0 for w in written)
        res = os_.search("t", SearchRequest(user_id="u", query="Where did Caroline move?", preset="hybrid_rerank",
                                            explain=True)).results
        best = min(res, key=lambda r: r["rank"])
        assert best["source_ids"] == ["m1"] and 0.0 < best["why"]["rerank"]["score"] < 1.0
        assert best["score"] == max(r["score"] for r in res)
    finally:
        os_.close()


class _UnstatedInputs:
    """The packaged model as a worker of the previous release describes it: the same heads, without
    `specs` (what each head reads), so a client cannot tell whether its rows fit."""

    def __init__(self, model: TorchGateModel) -> None:
        self.model = model

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in self.model.describe().items() if k != "specs"}


def test_a_worker_that_does_not_say_what_its_heads_read_is_not_used(local: TorchGateModel, worker: str,
                                                                    tmp_path: Path) -> None:
    """Another version's worker may read other columns (this version's write gate reads the previous
    turn too): the client uses only heads whose inputs the worker states and this code computes, so a
    version skew runs the heuristic twins instead of failing every write."""
    from memsvc.config import RemoteGates, Settings
    from memsvc.schemas import MessageIn, WriteRequest
    from memsvc.write.stages import heuristic_gate
    from storage.registry import build_memory_os

    assert local.describe()["specs"]["write"]["features"] == list(WRITE_GATE_FEATURES)
    stated = RemoteGateModel(worker)
    assert all(stated.has(h) for h in PACKAGED_HEADS)
    stated.close()
    served = _serve(_UnstatedInputs(local))  # type: ignore[arg-type]
    url = next(served)
    try:
        remote = RemoteGateModel(url)
        assert remote.describe()["heads"] == sorted(PACKAGED_HEADS) and not any(remote.has(h) for h in G.HEADS)
        remote.close()
        os_ = build_memory_os(Settings(data_dir=tmp_path, gates=RemoteGates(url=url)))
        try:
            text = "I moved to Berlin in May."
            (w,) = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
                MessageIn(id="m1", role="user", name="Caroline", content=text)])).written
            assert w["importance"] == heuristic_gate(Role.USER, text).importance
        finally:
            os_.close()
    finally:
        next(served, None)


def test_only_an_unreachable_gate_model_falls_back(local: TorchGateModel) -> None:
    """A worker out of reach is answered by the heuristic twin; any other error of the model (a bug, a
    local model fed the wrong shape) still fails the call, so it is seen rather than hidden."""
    from memsvc.errors import BackendUnavailable
    from memsvc.gating import GateFallbacks

    fallbacks = GateFallbacks()
    assert fallbacks.call("write", lambda: 0.5) == 0.5 and fallbacks.counts() == {}

    def gone() -> float:
        raise BackendUnavailable("gate worker unreachable")

    assert fallbacks.call("write", gone) is None and fallbacks.call("write", gone) is None
    with pytest.raises(RuntimeError):
        fallbacks.call("write", lambda: local.memorability(np.zeros((1, 10), np.float32), np.zeros((1, 3), np.float32)))
    assert fallbacks.counts() == {"write": 2}


def test_a_gate_worker_out_of_reach_leaves_the_heuristic_twins_running(local: TorchGateModel, tmp_path: Path) -> None:
    """A gate worker that restarts or cannot be reached fails no write and no search: the write gate's
    heuristic twin sets the importance, the read path keeps the fused order and says so, and each
    fallback is counted per head (GET /v1/policies, /metrics)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from memsvc.config import RemoteGates, Settings
    from memsvc.schemas import MessageIn, SearchRequest, WriteRequest
    from memsvc.write.stages import heuristic_gate
    from storage.registry import build_memory_os

    served = _serve(local)
    url = next(served)
    os_ = build_memory_os(Settings(data_dir=tmp_path, gates=RemoteGates(url=url, timeout_s=1.0)))
    try:
        learned = "I moved to Berlin in May."
        (w,) = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="m1", role="user", name="Caroline", content=learned)])).written
        assert w["importance"] != heuristic_gate(Role.USER, learned).importance  # the worker's write head
        next(served, None)  # the worker goes away
        text = "We adopted a puppy named Rex last weekend."
        (w,) = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="m2", role="user", name="Melanie", content=text)])).written
        assert w["importance"] == heuristic_gate(Role.USER, text).importance
        query = "Where did Caroline move?"
        res = os_.search("t", SearchRequest(user_id="u", query=query, preset="hybrid_temporal_rerank",
                                            explain=True)).results
        fused = os_.search("t", SearchRequest(user_id="u", query=query, preset="hybrid_temporal")).results
        assert [r["id"] for r in res] == [r["id"] for r in fused] and len(res) == 2
        assert all(r["why"]["rerank"] == {"skipped": "gate model unavailable: fused order"} for r in res)
        assert all("router" not in r["why"] for r in res)
        assert os_.policies("t")["gates"]["fallbacks"] == {"query": 1, "rerank": 1, "route": 1, "write": 1}
        metrics = TestClient(create_app(memory_os=os_)).get("/metrics").text
        assert 'memsvc_gate_fallbacks_total{head="write"} 1.0' in metrics
        assert 'memsvc_gate_fallbacks_total{head="rerank"} 1.0' in metrics
        assert "this node)</dt><dd>query 1, rerank 1, route 1, write 1</dd>" in _admin_policies_page(os_)
    finally:
        os_.close()
        next(served, None)


def test_packaged_fold_heads_are_stored_in_half_precision_and_load_as_float32(tmp_path: Path) -> None:
    import shutil

    import torch

    stored = torch.load(G.PACKAGED / G.FOLDS, map_location="cpu", weights_only=True)
    assert stored and all(t.dtype == torch.float16 for fold in stored for state in fold.values()
                          for t in state.values() if t.is_floating_point())
    folds = G.load_folds(G.PACKAGED)
    assert len(folds) == G.read_manifest(G.PACKAGED).config["folds"]
    assert all(p.dtype == torch.float32 for fold in folds for m in fold.values() for p in m.parameters())
    # Re-saving the loaded heads gives the very same half-precision weights back (float16 -> float32
    # -> float16 is exact), so an evaluation that reloads and re-saves the fold heads changes nothing.
    shutil.copy(G.PACKAGED / "manifest.json", tmp_path / "manifest.json")
    G.save_folds(tmp_path, folds)
    again = torch.load(tmp_path / G.FOLDS, map_location="cpu", weights_only=True)
    assert all(torch.equal(again[f][h][k], stored[f][h][k]) for f in range(len(stored)) for h in stored[f]
               for k in stored[f][h])


def test_the_admin_policies_page_shows_the_runs_comparisons(tmp_path: Path) -> None:
    from memsvc.config import LocalGates, Settings
    from storage.registry import build_memory_os

    # the packaged artefact's run compared the reranker without its neighbour columns; the projected
    # one's (trained before them) the other way to the query's e5 row
    for path, twin, projection in ((None, "neighbours", False), (G.PROJECTED, "embedded", True)):
        os_ = build_memory_os(Settings(data_dir=tmp_path / twin, gates=LocalGates(path=path)))
        try:
            page = _admin_policies_page(os_)
            if projection:
                assert f"reranked WR@500, the query's e5 row {twin} instead</th>" in page
            else:
                alone = G.read_manifest(G.PACKAGED).metrics["rerank_without_neighbours"]["locomo/hybrid_temporal"]
                assert "reranked WR@500 without the neighbour columns</th>" in page
                assert f'<td>{alone["rerank"]["WR@500"]:.3f}</td>' in page
            # and the same reranker with its context columns read without e5 rows, from the same run
            blind = G.read_manifest(path or G.PACKAGED).metrics["rerank_context_without_e5"]["locomo/hybrid_temporal"]
            assert "reranked WR@500, the context columns without e5 rows</th>" in page
            assert f'<td>{blind["rerank"]["WR@500"]:.3f}</td>' in page
            assert ("mean cosine to the query's own e5 embedding" in page) is projection
        finally:
            os_.close()
