"""Segmentation by session, time gap and surprise, continued across requests from the stored state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memsvc.lifecycle.episodes import GAP, SESSION, SURPRISE, SegmentParams, boundaries, segment
from memsvc.models import EpisodeState

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def topic(k: int, n: int, seed: int = 0) -> np.ndarray:
    """n unit vectors close to axis k (similar to each other, far from other axes)."""
    rng = np.random.default_rng(seed + k)
    base = np.zeros(8, dtype=np.float32)
    base[k] = 1.0
    vecs = base + 0.15 * rng.standard_normal((n, 8)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def fresh() -> EpisodeState:
    return EpisodeState(tenant="t", user_id="u")


def test_session_change_and_time_gap_open_episodes() -> None:
    times = [T0, T0 + timedelta(minutes=5), T0 + timedelta(hours=2), T0 + timedelta(hours=2, minutes=1)]
    seg = segment(fresh(), times, ["s1", "s1", "s1", "s2"], np.stack([unit(1, 0)] * 4))
    assert seg.episodes == [0, 0, 1, 2]
    assert seg.positions == [0, 1, 2, 3]
    assert seg.closed == [0, 1]
    assert [(e.episode, e.turns, e.boundary) for e in seg.touched] == [(0, 2, GAP), (1, 1, SESSION), (2, 1, None)]


def test_a_drop_in_similarity_opens_an_episode_once_the_baseline_is_warm() -> None:
    vecs = np.concatenate([topic(0, 8), topic(3, 6)])
    seg = segment(fresh(), [T0] * len(vecs), [None] * len(vecs), vecs, SegmentParams(gamma=1.5, min_turns=4))
    assert seg.episodes == [0] * 8 + [1] * 6
    assert seg.touched[0].boundary == SURPRISE
    assert boundaries(vecs, SegmentParams(gamma=1.5, min_turns=4)) == [8]
    # the same drop inside a short episode (fewer than min_turns) cuts nothing
    assert boundaries(vecs, SegmentParams(gamma=1.5, min_turns=10)) == []


def test_episode_numbers_continue_across_requests() -> None:
    vecs = np.concatenate([topic(0, 8), topic(3, 6)])
    whole = segment(fresh(), [T0] * 14, ["s"] * 14, vecs)
    first = segment(fresh(), [T0] * 5, ["s"] * 5, vecs[:5])
    second = segment(first.state, [T0] * 5, ["s"] * 5, vecs[5:10])
    third = segment(second.state, [T0] * 4, ["s"] * 4, vecs[10:])
    assert first.episodes + second.episodes + third.episodes == whole.episodes
    assert first.positions + second.positions + third.positions == list(range(14))
    # the stored last vector is rounded (6 decimals): the baseline agrees to float precision
    exact = {"sim_mean", "sim_var"}
    assert third.state.model_dump(exclude=exact) == whole.state.model_dump(exclude=exact)
    assert (third.state.sim_mean, third.state.sim_var) == pytest.approx((whole.state.sim_mean, whole.state.sim_var))
    # a later request in another session closes the open episode and numbers on
    later = segment(third.state, [T0 + timedelta(days=1)], ["s2"], vecs[:1])
    assert later.episodes == [whole.episodes[-1] + 1]
    assert later.closed == [whole.episodes[-1]]
    assert later.touched[0].turns == third.state.turns  # the closed row keeps its turn count
