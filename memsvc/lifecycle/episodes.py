"""Episode segmentation: a new episode at a session change, a time gap, or a surprise (EM-LLM).

Surprise is a drop of the cosine similarity between a turn's embedding and the previous turn's
below a running baseline: with `m` and `v` the exponential moving mean and variance of those
similarities, a turn opens a new episode when `sim < m - gamma * sqrt(v)`, once the baseline has
seen `warmup` pairs and the open episode has `min_turns` turns (a single off-topic line does not cut
a two-turn exchange). The baseline keeps running across episodes and requests: it is part of the
scope's `EpisodeState`, which the write path reads and commits with the turns, so episode numbers
are stable per scope whatever the request boundaries. Pure functions, no I/O.

`gamma` was tuned on LoCoMo (dev) by recovering session boundaries from the turns alone, k-fold by
conversation (`python -m evals.tune_episodes`, numbers in the README's "Lifecycle" section).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from memsvc.models import Episode, EpisodeState

SESSION, GAP, SURPRISE = "session", "gap", "surprise"


@dataclass(frozen=True)
class SegmentParams:
    gap: timedelta = timedelta(minutes=30)
    gamma: float = 1.5  # standard deviations below the running mean that count as a surprise
    min_turns: int = 4  # turns an episode holds before surprise may close it
    alpha: float = 0.1  # weight of the newest similarity in the running mean and variance
    warmup: int = 5  # similarities the baseline needs before surprise is trusted


@dataclass
class Segmentation:
    episodes: list[int]  # the episode of each turn, in order
    positions: list[int]  # each turn's position in the scope's stream
    state: EpisodeState  # the scope's state after the turns
    touched: list[Episode] = field(default_factory=list)  # episode rows to upsert (opened, grown, closed)
    closed: list[int] = field(default_factory=list)  # episodes these turns closed


def surprised(sim: float, state: EpisodeState, params: SegmentParams) -> bool:
    """Whether `sim` falls below the scope's running baseline by `gamma` standard deviations."""
    if state.sim_n < params.warmup or state.turns < params.min_turns:
        return False
    return sim < state.sim_mean - params.gamma * math.sqrt(max(state.sim_var, 0.0))


def _observe(state: EpisodeState, sim: float, alpha: float) -> None:
    if state.sim_n == 0:
        state.sim_mean, state.sim_var = sim, 0.0
    else:
        delta = sim - state.sim_mean
        state.sim_mean += alpha * delta
        state.sim_var = (1 - alpha) * (state.sim_var + alpha * delta * delta)
    state.sim_n += 1


def segment(
    state: EpisodeState, times: Sequence[datetime], sessions: Sequence[str | None], vectors: np.ndarray,
    params: SegmentParams | None = None,
) -> Segmentation:
    """Assign each turn (in order; unit-norm `vectors`) its episode, continuing `state`."""
    p = params or SegmentParams()
    st = state.model_copy(deep=True)
    rows: dict[int, Episode] = {}
    if st.episode >= 0:
        rows[st.episode] = Episode(tenant=st.tenant, user_id=st.user_id, episode=st.episode, session_id=st.last_session,
                                   started_at=st.started_at, ended_at=st.last_time, turns=st.turns)
    prev = np.asarray(st.last_vector, dtype=np.float32) if st.last_vector is not None else None
    out = Segmentation(episodes=[], positions=[], state=st)
    for when, session, vec in zip(times, sessions, vectors, strict=True):
        boundary: str | None = None
        sim = float(vec @ prev) if prev is not None and prev.shape == vec.shape else None
        if st.episode < 0 or session != st.last_session:
            boundary = SESSION
        elif st.last_time is not None and when - st.last_time > p.gap:
            boundary = GAP
        elif sim is not None and surprised(sim, st, p):
            boundary = SURPRISE
        if sim is not None and boundary != SESSION:  # a new session's first turn is no evidence of topic drift
            _observe(st, sim, p.alpha)
        if boundary is not None:
            if st.episode >= 0:
                closing = rows[st.episode]
                closing.closed_at, closing.boundary = when, boundary
                out.closed.append(st.episode)
            st.episode += 1
            st.turns, st.started_at = 0, when
            rows[st.episode] = Episode(tenant=st.tenant, user_id=st.user_id, episode=st.episode, session_id=session,
                                       started_at=when)
        st.turns += 1
        st.seq += 1
        row = rows[st.episode]
        row.turns = st.turns
        row.ended_at = when if row.ended_at is None or when > row.ended_at else row.ended_at
        st.last_time, st.last_session = when, session
        prev = np.asarray(vec, dtype=np.float32)
        out.episodes.append(st.episode)
        out.positions.append(st.seq - 1)
    if prev is not None:
        st.last_vector = [round(float(x), 6) for x in prev]
    out.touched = [rows[k] for k in sorted(rows)]
    return out


def boundaries(vectors: np.ndarray, params: SegmentParams) -> list[int]:
    """Indices of the turns that open an episode by surprise alone (one stream, no times or
    sessions): what the tuning scores against known boundaries."""
    state = EpisodeState(tenant="", user_id="")
    times = [datetime(2000, 1, 1)] * len(vectors)
    seg = segment(state, times, [None] * len(vectors), vectors, params)
    return [i for i in range(1, len(seg.episodes)) if seg.episodes[i] != seg.episodes[i - 1]]
