"""`memsvc train gates`, bounded: one LoCoMo conversation, a few questions, two folds — the same code
path as the full run, ending in an artefact the service loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from evals.gates_data import QueryExample
from memsvc.learn import gates as G
from storage.gates.local import TorchGateModel


@pytest.mark.data
def test_bounded_training_writes_a_loadable_artefact_with_its_manifest(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "gates"
    result = CliRunner().invoke(app, [
        "train", "gates", "--data", str(data_root), "--tasks", "locomo,proced_mem_bench", "--scenes", "1", "--limit", "8",
        "--folds", "2", "--steps", "10", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress",
        "--second-query", "projected", "--category-weight", "multi_hop=3", "--loss", "lambda",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["category_weight"] == {"multi_hop": 3.0}
    assert manifest["config"]["loss"] == "lambda"
    pairs = (line.split(None, 1) for line in (data_root / "SHA256SUMS").read_text().splitlines() if line.strip())
    sums = {path.strip(): digest for digest, path in pairs}
    assert manifest["data"]["locomo/locomo10_dev.json"] == sums["locomo/locomo10_dev.json"]
    assert all(sums[f] == h for f, h in manifest["data"].items())
    assert manifest["name"] == "memsvc-gates" and manifest["config"]["folds"] == 2
    assert set(manifest["metrics"]) == {"rerank", "rerank_without_adapter", "rerank_context_without_e5",
                                        "rerank_without_neighbours", "query", "second", "write", "route"}
    assert manifest["metrics"]["query"]["n"] >= 1 and 0 < manifest["metrics"]["query"]["mrr_adapted"] <= 1
    pooled = manifest["metrics"]["rerank"]["locomo/hybrid_temporal"]
    assert set(pooled) >= {"fused", "fused+dedup", "rerank", "by_category"} and pooled["rerank"]["n"] >= 1
    assert set(manifest["config"]["folds_of"].values()) <= {0, 1}
    # the reranker read the candidates' e5 cosines (computed from their texts, cached with the examples)
    assert manifest["heads"]["rerank"]["second_embedder"] == manifest["config"]["second_embedder"]["name"]
    assert (tmp_path / "cache" / "second.pkl").exists()
    # the query's e5 row is projected from its MiniLM embedding: held-out questions land near their own
    second = manifest["metrics"]["second"]
    assert second["n"] >= 1 and 0 < second["cosine_to_e5_query"] <= 1
    assert manifest["heads"]["second"]["out_dim"] == 384
    folds = G.load_folds(out)
    assert len(folds) == 2 and all(set(f) == {"rerank", "query", "second"} for f in folds)
    model = TorchGateModel(out, device="cpu")
    assert all(model.has(h) for h in G.HEADS)
    assert model.describe()["metrics"] == manifest["metrics"]
    # training fills the neighbour columns from the scene's stream as the write numbers it (`TURN_KEY`):
    # exactly the columns the read path computed from the stored turns when the examples were collected
    import pickle

    import numpy as np

    from evals.tasks import build_task
    from evals.train_gates import fill_neighbours, stream_of
    from memsvc.learn.features import NEIGHBOUR_AT

    [cached] = (tmp_path / "cache").glob("locomo-*.pkl")
    examples = pickle.loads(cached.read_bytes()).queries  # our own cache file, written by the run above
    task = build_task("locomo", data_root).select(8, 1)  # the run's --limit and --scenes
    assert examples and all(ex.neighbours is None for ex in examples)
    fill_neighbours(examples, stream_of(task))
    for ex in examples:
        assert ex.neighbours is not None
        np.testing.assert_allclose(ex.neighbours, ex.features[:, NEIGHBOUR_AT:], atol=1e-6)
    assert sum(float(ex.neighbours[:, -1].sum()) for ex in examples) > 0  # turns beside candidates were found


FACTS = [
    ("Caroline", "I moved to Berlin in May.", "Where did Caroline move?"),
    ("Melanie", "We went camping by the lake last weekend.", "Where did Melanie go camping?"),
    ("Jon", "My sister Anna is a nurse in Leeds.", "What does Jon's sister do?"),
    ("Priya", "I adopted a grey cat called Miso.", "What is Priya's cat called?"),
    ("Tom", "I started learning the cello in March.", "Which instrument is Tom learning?"),
    ("Lena", "Our team won the regional chess final.", "What did Lena's team win?"),
    ("Omar", "I bake sourdough bread every Sunday.", "What does Omar bake on Sundays?"),
    ("Sara", "I am allergic to peanuts.", "What is Sara allergic to?"),
]


def test_feedback_finetuning_reads_the_tenants_events_and_keeps_a_model_nothing_beats(tmp_path: Path) -> None:
    from evals.train_gates import finetune_from_feedback
    from memsvc.config import Settings
    from memsvc.schemas import FeedbackRequest, MessageIn, WriteRequest
    from storage.registry import build_memory_os

    data_dir = tmp_path / "data"
    os_ = build_memory_os(Settings(data_dir=data_dir))
    try:
        written = os_.add("t", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id=f"m{i}", role="user", name=name, content=text) for i, (name, text, _) in enumerate(FACTS)
        ])).written
        by_source = {w["source_ids"][0]: w["id"] for w in written}
        for _ in range(2):  # 16 helpful events, then one unhelpful, then one of another tenant
            for i, (_, _, question) in enumerate(FACTS):
                os_.feedback("t", FeedbackRequest(user_id="u", query=question, used_memory_ids=[by_source[f"m{i}"]],
                                                  helpful=True))
        os_.feedback("t", FeedbackRequest(user_id="u", query=FACTS[0][2], used_memory_ids=[by_source["m1"]],
                                          helpful=False))
        other = os_.add("other", WriteRequest(user_id="u", infer=False, messages=[
            MessageIn(id="x", role="user", name="Caroline", content="I moved to Rome.")])).written
        os_.feedback("other", FeedbackRequest(user_id="u", query=FACTS[0][2], used_memory_ids=[other[0]["id"]]))
    finally:
        os_.close()  # the command runs with the server stopped
    out = tmp_path / "gates-t"
    report = finetune_from_feedback("t", data_dir, out, holdout=0.25)
    assert report["tenant"] == "t" and report["preset"] == "hybrid_temporal_rerank"
    assert (report["events"], report["usable"], report["train"], report["held_back"]) == (17, 16, 12, 4)
    assert set(report["base"]) == set(report["tuned"]) == {"mrr", "recall@10"}
    # the shipped reranker already puts every helpful memory first: nothing to gain, nothing written
    # (the branch that keeps a better model is covered in tests/unit/test_feedback_tuning.py)
    assert report["base"]["mrr"] == 1.0 and report["kept"] == "base"
    assert "written" not in report and not out.exists()


def test_second_columns_are_the_candidates_e5_cosines_to_the_question(tmp_path: Path) -> None:
    import numpy as np

    from evals.gates_data import QueryExample
    from evals.train_gates import BASE_WIDTH, second_vectors, with_adapted
    from memsvc.learn.features import (
        ADAPTED_FEATURES,
        CONTEXT_AT,
        NEIGHBOUR_AT,
        RERANK_FEATURES,
        SECOND_FEATURES,
        context_columns,
        context_prescore,
        second_columns,
    )
    from memsvc.learn.second import SecondEmbedder

    contents = ["Caroline: I moved to Berlin in May.", "Melanie: We went camping by the lake.", "Jon: ok"]
    ex = QueryExample(task="locomo", scene="c1", query_id="q1", category="single_hop", text="Where did Caroline move?",
                      gold=("d1",), pool="hybrid_temporal", features=np.zeros((3, BASE_WIDTH + 8), np.float32),
                      labels=np.array([True, False, False]), credited=[("d1",), (), ()], words=[7, 7, 2],
                      episodic=[True] * 3, sources=[("d1",), ("d2",), ("d3",)], ranks=np.zeros((3, 3), np.int32),
                      contents=contents, dates=["2023-05-08", "2023-05-08", "2023-06-01"])
    assert ex.second is None
    second_vectors([ex], tmp_path)
    e5 = SecondEmbedder()
    expected = second_columns(e5.encode(contents) @ e5.encode_query(ex.text))
    assert ex.second is not None
    np.testing.assert_allclose(ex.second, expected, atol=1e-5)
    assert int(np.argmin(ex.second[:, 3])) == 0  # the Berlin turn ranks first by e5
    rows = with_adapted(ex, np.ones((3, len(ADAPTED_FEATURES)), np.float32))
    assert rows.shape == (3, len(RERANK_FEATURES))
    np.testing.assert_allclose(rows[:, BASE_WIDTH:BASE_WIDTH + len(SECOND_FEATURES)], expected, atol=1e-5)
    # the context columns read the candidates' e5 rows when given, else none (zeros: orthogonal)
    vectors = e5.encode(contents)
    with_rows = with_adapted(ex, np.ones((3, len(ADAPTED_FEATURES)), np.float32), vectors=vectors)
    head = with_rows[:, :CONTEXT_AT]
    np.testing.assert_allclose(head, rows[:, :CONTEXT_AT])
    np.testing.assert_allclose(with_rows[:, CONTEXT_AT:NEIGHBOUR_AT],
                               context_columns(context_prescore(head), vectors, ex.dates), atol=1e-5)
    assert not np.allclose(with_rows[:, CONTEXT_AT:NEIGHBOUR_AT], rows[:, CONTEXT_AT:NEIGHBOUR_AT])
    # a second run reads the cache instead of embedding again: every text is in it, and it is not rewritten
    cache = tmp_path / "second.pkl"
    before = (cache.stat().st_mtime_ns, cache.read_bytes())
    ex.second = None
    second_vectors([ex], tmp_path)
    np.testing.assert_allclose(ex.second, expected, atol=1e-5)
    assert (cache.stat().st_mtime_ns, cache.read_bytes()) == before


def test_the_query_row_option_names_its_two_ways(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "gates", "--second-query", "guessed", "--out", str(tmp_path / "g")])
    assert result.exit_code != 0 and "'projected' or 'embedded'" in result.output
    assert not (tmp_path / "g").exists()


def _example(task: str, category: str) -> QueryExample:
    import numpy as np

    from memsvc.learn.features import RERANK_FEATURES

    # the collected rows' full width, as `evals.gates_data.collect_task` writes them
    return QueryExample(task=task, scene="c1", query_id=f"{task}-{category}", category=category, text="Where?",
                        gold=("d1",), pool="hybrid_temporal", features=np.zeros((2, len(RERANK_FEATURES)), np.float32),
                        labels=np.array([True, False]), credited=[("d1",), ()], words=[7, 2], episodic=[True] * 2,
                        sources=[("d1",), ("d2",)], ranks=np.zeros((2, 3), np.int32), contents=["a", "b"],
                        dates=["", ""])


def test_category_weights_scale_the_loss_of_the_categories_they_name() -> None:
    from evals.train_gates import category_weights, query_weights

    assert category_weights("multi_hop=3, commonsense=0.5") == {"multi_hop": 3.0, "commonsense": 0.5}
    assert category_weights("") == {}
    for bad in ("multi_hop", "=3", "multi_hop=x", "multi_hop=0", "multi_hop=-2", "multi_hop=nan", "multi_hop=inf"):
        with pytest.raises(ValueError):
            category_weights(bad)
    examples = [_example("locomo", "single_hop"), _example("locomo", "multi_hop"), _example("realtalk", "multi_hop"),
                _example("realtalk", "commonsense")]
    assert query_weights(examples, False) == [1.0, 1.0, 1.0, 1.0]
    assert query_weights(examples, False, {"multi_hop": 3.0}) == [1.0, 3.0, 3.0, 1.0]
    # times the task's weight: with balance, each task's queries share 1
    assert query_weights(examples, True, {"multi_hop": 3.0}) == [0.5, 1.5, 1.5, 0.5]


def test_a_category_weight_is_refused_before_anything_is_collected(data_root: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "g", tmp_path / "cache"
    result = CliRunner().invoke(app, ["train", "gates", "--category-weight", "multi_hop=0", "--out", str(out)])
    assert result.exit_code != 0 and "positive" in result.output
    result = CliRunner().invoke(app, ["train", "gates", "--loss", "hinge", "--out", str(out), "--cache", str(cache)])
    assert result.exit_code != 0 and "listnet" in result.output and "lambda" in result.output
    result = CliRunner().invoke(app, [
        "train", "gates", "--data", str(data_root), "--tasks", "locomo", "--scenes", "1", "--limit", "8",
        "--category-weight", "multihop=3", "--out", str(out), "--cache", str(cache), "--no-progress",
    ])
    assert result.exit_code != 0
    assert "multihop" in result.output and "multi_hop" in result.output  # names the categories there are
    assert not out.exists() and not cache.exists()
