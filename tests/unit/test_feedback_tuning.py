"""Fine-tuning on feedback replaces the reranker only when the held-back newest events say it is better."""

from __future__ import annotations

import numpy as np

from memsvc.learn.features import RERANK_FEATURES
from memsvc.learn.feedback import ranking_quality, tune_on_feedback
from memsvc.learn.train import ListGroup, fit_reranker, score_lists


def _groups(n: int, column: int, sign: float, seed: int) -> list[ListGroup]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=(20, len(RERANK_FEATURES))).astype(np.float32)
        y = np.zeros(20, dtype=np.float32)
        y[rng.integers(20)] = 1
        x[y == 1, column] += 3.0 * sign
        out.append(ListGroup(x, y))
    return out


def test_a_model_that_learns_the_tenants_signal_is_kept() -> None:
    base = fit_reranker(_groups(80, 0, 1.0, seed=1), steps=150)  # "dev data": feature 0 marks gold
    feedback = _groups(50, 3, 1.0, seed=2)  # this tenant's helpful memories stand out on feature 3
    result = tune_on_feedback(base, feedback, events=55, holdout=0.2)
    assert (result.train, result.held_back, result.events) == (40, 10, 55)
    assert result.kept == "tuned" and result.model is not None
    assert result.tuned["mrr"] > result.base["mrr"]
    assert ranking_quality(result.model, feedback[40:]) == result.tuned


def test_a_model_the_held_back_events_contradict_is_refused() -> None:
    base = fit_reranker(_groups(80, 0, 1.0, seed=1), steps=150)
    drifted = _groups(40, 3, 1.0, seed=3) + _groups(10, 3, -1.0, seed=4)  # the newest events say the opposite
    result = tune_on_feedback(base, drifted, events=50, holdout=0.2)
    assert result.kept == "base" and result.model is None
    assert result.tuned["mrr"] <= result.base["mrr"]


def test_too_little_feedback_trains_nothing() -> None:
    base = fit_reranker(_groups(20, 0, 1.0, seed=1), steps=20)
    result = tune_on_feedback(base, _groups(5, 3, 1.0, seed=2), events=5)
    assert result.kept == "base" and result.base == {} and result.model is None


def test_feedback_is_judged_in_the_order_the_read_path_serves() -> None:
    model = fit_reranker(_groups(80, 0, 1.0, seed=1), steps=150)
    group = _groups(1, 0, 1.0, seed=5)[0]
    gold = int(np.argmax(group.labels))
    group.features[gold, 0] += 10.0  # the signal the model learned, loud
    scores = score_lists(model, [group.features])[0]
    assert int(np.argmax(scores)) == gold  # by the raw score the helpful memory comes first
    # ... but every memory is short and the helpful one long: per token it comes last
    lengths = np.full(len(scores), 8.0, dtype=np.float32)
    lengths[gold] = 8.0 * float(np.exp(scores[gold] - scores.min() + 1.0))
    long_gold = ListGroup(group.features, group.labels, lengths=lengths)
    assert ranking_quality(model, [group])["mrr"] == 1.0
    assert ranking_quality(model, [long_gold])["mrr"] == round(1.0 / len(scores), 4)
