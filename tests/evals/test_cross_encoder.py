"""The cross-encoder measured as the read gate's second stage: its input format and a training step
on the real packaged MiniLM."""

from __future__ import annotations

import math

import torch

from evals.cross_encoder import CrossEncoder, PairGroup, fit_cross, pair_text


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
