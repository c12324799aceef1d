"""The read gate's cross-encoder stage (`memsvc.learn.cross`): its input format, a training step on the
real packaged MiniLM, and its artefact's storage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from memsvc.learn import cross as X
from memsvc.learn.artefact import Manifest
from memsvc.learn.cross import CrossEncoder, PairGroup, fit_cross, pair_text


def test_pair_text_puts_the_event_day_first() -> None:
    assert pair_text("Caroline: I went to a support group.", "2023-05-08") == (
        "(8 May 2023) Caroline: I went to a support group.")
    assert pair_text("no date", "") == "no date"
    assert pair_text("bad date", "yesterday") == "bad date"


def test_a_truncated_minilm_scores_pairs_and_a_listwise_step_moves_towards_the_gold() -> None:
    groups = [PairGroup("Where did Caroline move?", ("Caroline: I moved to Berlin in May.",),
                        ("Melanie: We went camping.", "Caroline: Hey, how are you?"))] * 8
    before = CrossEncoder(layers=1)
    torch.manual_seed(0)
    model = fit_cross(groups, layers=1, negatives=2, epochs=4, batch=4, lr=1e-3)
    assert not model.training
    assert model.bert.config.num_hidden_layers == 1 and len(model.bert.encoder.layer) == 1
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    texts = [*groups[0].positives, *groups[0].negatives]
    scores = model.score(groups[0].query, texts)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert scores[0] > max(scores[1:])  # trained on exactly this list: the gold comes first
    assert len(before.score(groups[0].query, texts)) == 3


GROUPS = [PairGroup("Where did Caroline move?", ("Caroline: I moved to Berlin in May.",),
                    ("Melanie: We went camping.", "Caroline: Hey, how are you?"))] * 8


def test_storage_keeps_only_what_training_changed_each_weight_within_a_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = fit_cross(GROUPS, layers=1, negatives=2, epochs=1, batch=4, lr=1e-3)
    state = X.trained_state(model)
    assert state and not any(k.startswith(X.FROZEN) for k in state)  # embeddings come from the packaged MiniLM
    assert any(k.startswith("bert.encoder.layer.0.") for k in state) and "head.weight" in state
    back = X.dequantize(X.quantize(state))
    assert back.keys() == state.keys()
    for key, v in state.items():
        if v.dim() == 2:  # int8 rows: within half a step, plus the float16 scale's rounding
            step = v.abs().amax(dim=1, keepdim=True) / 127.0
            assert ((back[key] - v).abs() <= 0.5 * step + 127 * step * 2.0 ** -10).all(), key
        else:
            torch.testing.assert_close(back[key], v.half().float())
    manifest = Manifest(name=X.NAME, version=X.VERSION, heads={"cross": X.head_spec(1)})
    X.save(tmp_path, model, manifest)
    fp32_bytes = sum(v.numel() * 4 for v in state.values())
    assert (tmp_path / manifest.weights).stat().st_size < 0.3 * fp32_bytes
    _, loaded = X.load(tmp_path)
    texts = [*GROUPS[0].positives, *GROUPS[0].negatives]
    stored = X.stored_copy(model)
    assert loaded.score(GROUPS[0].query, texts) == pytest.approx(stored.score(GROUPS[0].query, texts), abs=1e-5)


def test_an_artefact_of_another_shape_is_refused_by_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = fit_cross(GROUPS[:4], layers=1, negatives=2, epochs=1, batch=4)
    X.save(tmp_path, model, Manifest(name=X.NAME, version=X.VERSION, heads={"cross": X.head_spec(2)}))
    with pytest.raises(ValueError, match="does not fit a 2-layer MiniLM"):
        X.load(tmp_path)


def test_fold_models_are_read_only_beside_the_artefact_they_were_trained_with(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = fit_cross(GROUPS[:4], layers=1, negatives=2, epochs=1, batch=4)
    manifest = Manifest(name=X.NAME, version=X.VERSION, heads={"cross": X.head_spec(1)})
    torch.save(X.quantize(X.trained_state(model)), tmp_path / "fold-0.pt")
    with pytest.raises(FileNotFoundError, match="memsvc train cross"):  # not stamped: whose folds are these?
        X.load_fold(tmp_path, manifest, 0)
    X.stamp_folds(tmp_path, manifest)
    texts = [*GROUPS[0].positives, *GROUPS[0].negatives]
    fold = X.load_fold(tmp_path, manifest, 0)
    assert fold.score(GROUPS[0].query, texts) == pytest.approx(X.stored_copy(model).score(GROUPS[0].query, texts),
                                                               abs=1e-5)
    retrained = Manifest(name=X.NAME, version=X.VERSION, heads={"cross": X.head_spec(1)})  # another run's artefact
    with pytest.raises(FileNotFoundError, match="no fold models"):
        X.load_fold(tmp_path, retrained, 0)
