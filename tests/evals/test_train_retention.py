"""`memsvc train retention`, bounded: two LoCoMo and two REALTALK conversations, three folds, a few
steps — the same code path as the full run (cross-fitted importance and evidence, the replayed CV of
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
        "--folds", "3", "--steps", "10", "--out", str(out), "--cache", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == R.NAME and manifest["version"] == R.VERSION
    assert manifest["config"]["scenes"] == 2 and sorted(set(manifest["config"]["folds_of"].values())) == [0, 1, 2]
    wr = manifest["metrics"]["WR@500"]
    assert set(wr) == {"locomo", "realtalk"}
    for task in wr.values():
        assert set(task) >= {"learned", "evidence", "importance", "lru", "fifo", "random", "oracle", "unbudgeted"}
        assert all(0.0 <= v <= 100.0 for fr in task.values() for v in fr.values())
        assert task["oracle"]["0.25"] >= task["random"]["0.25"]
    spec = manifest["heads"]["retention"]
    assert spec["features"] == list(FEATURES) and spec["embedder"] == "all-MiniLM-L6-v2"
    _, model = R.load(out)
    # the loaded model ranks a stream of real turns: distinct scores, the evidence column from its own head
    turns = ["Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
             "Melanie: That's great! How are the kids?", "Caroline: Haha, fine. Thanks!",
             "Melanie: I'm painting a sunset over the lake for my living room."]
    from memsvc.config import Settings
    from storage.registry import build_embedder

    emb = build_embedder(Settings()).embed(turns)
    stream = ScopeStream(turns, emb, np.full(4, 0.5, np.float32), np.zeros(4), np.arange(4))
    scores = keep_scores("learned", stream, beta_logit=model)
    assert np.isfinite(scores).all() and len(set(scores.round(6).tolist())) == 4
    assert np.isfinite(model.features(stream)[:, FEATURES.index("evidence")]).all()
