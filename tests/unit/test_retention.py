"""Retention policies as pure functions, on feature rows computed from real turns with the packaged MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from memsvc.config import Settings
from memsvc.lifecycle.retention import (
    FEATURES,
    ScopeStream,
    decay_scores,
    heuristic_scores,
    keep_scores,
    names_later,
    protected_mask,
    recurrence,
    select_archive,
    stream_features,
)

TURNS = [
    "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
    "Melanie: That's great! How are the kids?",
    "Caroline: Haha, fine. Thanks!",
    "Melanie: I'm painting a sunset over the lake for my living room.",
    "Caroline: Oliver said the adoption agency in Boston called him back.",
    "Melanie: Wow, cool.",
    "Caroline: The support group gave me courage to pursue counseling as a career.",
    "Melanie: Oliver must be thrilled about the adoption interview in Boston!",
]


@pytest.fixture(scope="module")
def stream() -> ScopeStream:
    from storage.registry import build_embedder

    emb = build_embedder(Settings()).embed(TURNS)
    n = len(TURNS)
    return ScopeStream(
        texts=TURNS, embeddings=emb,
        importance=np.array([0.9, 0.2, 0.1, 0.6, 0.8, 0.1, 0.7, 0.5], dtype=np.float32),
        access_count=np.array([3, 0, 0, 1, 0, 0, 0, 0], dtype=np.float32),
        last_used=np.array([6, 1, 2, 3, 4, 5, 6, 7][:n]),
    )


def col(name: str) -> int:
    return FEATURES.index(name)


def test_features_of_a_real_stream(stream: ScopeStream) -> None:
    x = stream_features(stream)
    assert x.shape == (8, len(FEATURES)) and np.isfinite(x).all()
    assert x[:, col("log_age")].tolist() == pytest.approx(np.log1p(np.arange(7, -1, -1)).tolist())
    assert x[-1, col("max_cos_later")] == 0.0 and x[0, col("max_cos_earlier")] == 0.0  # nothing after / before
    # the support group turn is restated later (turn 6); the phatic "Haha, fine" is not
    assert x[0, col("max_cos_later")] > x[2, col("max_cos_later")] + 0.2
    assert x[0, col("log_access")] == pytest.approx(np.log1p(3))
    assert x[0, col("log_since_access")] == pytest.approx(np.log1p(1))  # last used at position 6 of 0..7


def test_recurrence_and_names_look_only_forward() -> None:
    rec = recurrence(TURNS)
    assert rec[-1] == 0.0  # the last turn has no later turn
    assert rec[4] > 0.3  # adoption, Boston, Oliver come back in turn 7 (said, agency, called do not)
    assert rec[2] == 0.0  # "Haha, fine. Thanks!" never comes back
    names = names_later(TURNS)
    # Oliver and Boston recur once after turn 4; the speakers (in every turn) are no evidence of recurrence
    assert names[4] == pytest.approx(np.log1p(1)) and names[1] == 0.0


def test_heuristic_orders(stream: ScopeStream) -> None:
    active = np.ones(8, dtype=bool)
    fifo = select_archive(heuristic_scores("fifo", stream), active, 5)
    assert fifo.tolist() == [0, 1, 2]
    lru = select_archive(heuristic_scores("lru", stream), active, 5)
    assert lru.tolist() == [1, 2, 3]  # turn 0 was recalled at position 6: it stays
    imp = select_archive(heuristic_scores("importance", stream), active, 5)
    assert imp.tolist() == [1, 2, 5]  # the three least important
    ids = [f"m{i}" for i in range(8)]
    assert select_archive(heuristic_scores("random", stream, ids), active, 5).tolist() == \
        select_archive(heuristic_scores("random", stream, ids), active, 5).tolist()


def test_select_archive_spares_protected_and_inactive() -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    active = np.array([True, False, True, True, True])
    protected = np.array([True, False, False, False, False])
    assert select_archive(scores, active, 2, protected).tolist() == [2, 3]
    assert select_archive(scores, active, 4, protected).tolist() == []
    # protected memories go only when nothing else is left, least recently used first
    everything = np.ones(5, dtype=bool)
    out = select_archive(scores, everything, 0, everything, last_used=np.array([4, 3, 2, 1, 0]))
    assert out.tolist() == [0, 1, 2, 3, 4]


def test_protected_mask_is_newest_and_most_recently_used(stream: ScopeStream) -> None:
    active = np.ones(8, dtype=bool)
    active[7] = False
    mask = protected_mask(stream, active, 2)
    assert np.flatnonzero(mask).tolist() == [0, 5, 6]  # newest active: 5, 6; most recently used: 6, 0


def test_decay_and_learned_fallback(stream: ScopeStream) -> None:
    s = decay_scores(np.array([2.0, 2.0, 0.0]), np.array([10, 1, 1]))
    assert s[1] > s[0] and s[1] > s[2]  # the same beta decays with age; a lower beta decays faster
    beta = np.exp(-np.exp(-np.array([2.0, 2.0, 0.0])))
    log_r = (np.array([10, 1, 1]) + 1) * np.log(beta)  # r = beta^(age + 1): the same order
    assert np.argsort(s).tolist() == np.argsort(log_r).tolist()
    assert keep_scores("learned", stream).tolist() == heuristic_scores("importance", stream).tolist()
    called = {}

    def beta_logit(x: np.ndarray) -> np.ndarray:
        called["shape"] = x.shape
        return np.full(len(x), 1.0)

    out = keep_scores("learned", stream, beta_logit=beta_logit)
    assert called["shape"] == (8, len(FEATURES))
    assert out.tolist() == pytest.approx((1.0 - np.log1p(np.arange(7, -1, -1))).tolist())
    with pytest.raises(ValueError):
        heuristic_scores("keep_all", stream)
