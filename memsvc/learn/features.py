"""Features of the gate model's heads, as pure functions (numpy in, numpy out).

The read gate scores (query, candidate) pairs from what the read path already has: each
retriever's score and rank, the fused rank, the memory's type and length, and cheap lexical
signals (query words and names found in the memory, dates and numbers), plus each candidate's
cosine to the query as the query adapter moves it and in a second embedder's space, and what the
rest of the list says of it (the context columns: its e5 cosine to the list's top, and the weight of
its day there, `context_columns`). No candidate is
embedded at search time: the dense score of every candidate comes from one id-restricted vector
search, and the second embedder's rows are stored with the scope (`memsvc.learn.second.SecondRows`;
a search embeds at most a few it lacks). The write gate scores a message from its embedding
(computed anyway for the episodic cube) plus the heuristic gate's signals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import numpy as np

from memsvc.text_cache import CACHED_CHARS, short_text_cache

_WORD = re.compile(r"[A-Za-z0-9']+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)?\b")
_DIGIT = re.compile(r"\d")
_DATE_WORD = re.compile(
    r"\b(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(tember)?|oct(ober)?|"
    r"nov(ember)?|dec(ember)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday|yesterday|"
    r"today|tonight|tomorrow|weekend|week|month|year|ago|last|next|since|\d{4})\b", re.I)
_TEMPORAL_Q = re.compile(
    r"\b(when|what (?:day|date|year|month|time)|how long|since|before|after|ago|yesterday|first|last|recent(?:ly)?)\b",
    re.I)
_MULTI_Q = re.compile(r"\b(both|and|in common|compared?|relationship|which|all|how many|what (?:kinds?|types?))\b", re.I)
_QUESTION_WORDS = {
    "what", "when", "where", "who", "whom", "whose", "which", "why", "how", "did", "does", "do", "is", "are",
    "was", "were", "has", "have", "had", "can", "could", "would", "should", "will", "the", "a", "an", "in",
    "on", "at", "if", "i", "my", "according", "based", "given",
}
STOP = frozenset(["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "also", "ever", "get", "got", "go", "going", "went", "like", "really", "thing", "things", "yeah", "oh", "hey", "hi", "wow", "well", "much", "many", "lot", "lots", "one"])

TYPES = ("episodic", "semantic", "procedural", "refined")


@lru_cache(maxsize=1 << 16)  # a word's stem, asked for every word of every candidate of every search
def stem(word: str) -> str:
    """Crude English suffix stripping: plural, -ing, -ed (enough to match 'painting'/'paints'/'painted')."""
    w = word.lower().strip("'")
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text) if w.lower() not in STOP and len(w) > 1}


@short_text_cache(1 << 12, CACHED_CHARS)  # a memory's text recurs in its scope's pools (4,096: ~25 MB at most)
def _text_signals(text: str) -> tuple[frozenset[str], str, float, float]:
    """A candidate's lexical signals that do not depend on the query: its content stems, its text
    lower-cased, whether it holds a digit, whether it names a date word."""
    return (frozenset(content_stems(text)), text.lower(), 1.0 if _DIGIT.search(text) else 0.0,
            1.0 if _DATE_WORD.search(text) else 0.0)


def query_names(query: str) -> set[str]:
    """Capitalised words of the query that are not question or function words (lower-cased)."""
    return {w.lower() for w in _CAPITALISED.findall(query) if w.lower() not in _QUESTION_WORDS and w.lower() not in STOP}


@dataclass(frozen=True)
class Candidate:
    """What the read path knows about one fused candidate (None: that retriever did not return it)."""

    type: str
    content: str
    speaker: str | None
    derived: bool
    tokens: int
    event_epoch: float | None
    dense: float | None
    keyword: float | None
    graph: float | None
    dense_rank: int | None
    keyword_rank: int | None
    graph_rank: int | None
    fused: float
    fused_rank: int
    temporal_rank: int | None = None  # rank in the `temporal` ranking (dated in the period the query names)
    adapted: float | None = None  # cosine to the query as the query adapter moves it (None: no adapter)
    second: float | None = None  # cosine to the query in the second embedder's space (None: no row stored)
    second_row: np.ndarray | None = None  # the memory's row in the second embedder's space (None: none stored)
    turn: int | None = None  # a turn's position in the scope's stream (`TURN_KEY`; None: derived or unknown)
    session: str | None = None  # the memory's session
    sources: tuple[str, ...] = ()  # the message ids it restates


# The candidate's cosine to the adapted query (`memsvc.learn.nets.QueryAdapter`), as a value, its gap
# to the best candidate, a z-score within the list and its rank there: the last columns of the read
# gate's rows, so training can fill them with the adapter of the right fold.
ADAPTED_FEATURES: tuple[str, ...] = ("adapted", "adapted_gap", "adapted_z", "adapted_rank")
# The candidate's cosine to the query in a second embedder's space (`memsvc.learn.second`: the 4-bit
# multilingual-e5-small: the `passage:` row stored for the memory's text against the query's MiniLM
# embedding projected into e5's space by the artefact's `second` head, or, without that head, the
# query's own `query:` embedding), in the same four forms. Two embedders trained on different data disagree on what
# matches a question, and the head reads both (see the README's Learned gates for what it measured).
SECOND_FEATURES: tuple[str, ...] = ("second", "second_gap", "second_z", "second_rank")
SECOND_EMBEDDER = "multilingual-e5-small-q4"  # `memsvc.learn.second.NAME` (kept torch- and engine-free here)


def cosine_columns(cosines: np.ndarray) -> np.ndarray:
    """Four columns of one candidate list from each candidate's cosine to a query: the value, its gap
    to the best, a z-score within the list and the rank there (NaN where unknown: the list's mean
    stands in, ranked last)."""
    c = np.asarray(cosines, dtype=np.float64)
    n = len(c)
    out = np.zeros((n, 4), dtype=np.float32)
    have = ~np.isnan(c)
    if n == 0 or not have.any():
        out[:, 3] = math.log1p(n + 1) / 6.0
        return out
    mean = float(c[have].mean())
    std = float(c[have].std()) if have.sum() > 1 else 1.0
    filled = np.where(have, c, mean)
    rank = np.empty(n)
    rank[np.argsort(np.where(have, -c, np.inf), kind="stable")] = np.arange(n)
    out[:, 0] = filled
    out[:, 1] = filled - float(c[have].max())
    out[:, 2] = (filled - mean) / (std or 1.0)
    out[:, 3] = np.where(have, np.log1p(rank) / 6.0, math.log1p(n + 1) / 6.0)
    return out


def adapted_columns(cosines: np.ndarray) -> np.ndarray:
    """`ADAPTED_FEATURES` of one candidate list from each candidate's cosine to the adapted query."""
    return cosine_columns(cosines)


def second_columns(cosines: np.ndarray) -> np.ndarray:
    """`SECOND_FEATURES` of one candidate list from each candidate's second-embedder cosine to the query."""
    return cosine_columns(cosines)


# What the rest of the list says of a candidate (pseudo-relevance feedback): its e5 cosine to the
# score-weighted centroid of the list's top `CONTEXT_TOP` by the first-look score (`context_prescore`:
# the sum of the dense, second-embedder and adapted-query z-scores), leaving itself out, and to the
# nearest of the top three; how much of that score's probability mass sits in other candidates of the
# same day (a conversation's session) and the largest such candidate's; and the first-look score's
# z, gap and rank. Measured (5 folds by conversation, development suite, 2026-12-06), against the same
# reranker without them: LoCoMo WR@500 79.3 -> 81.2, ToolBench 76.7 -> 78.9, ReMe 82.5 -> 82.8;
# KnowMe 63.2 -> 59.2, Gorilla 35.0 -> 33.0, REALTALK 73.7 -> 72.7 (see the README's Learned gates).
CONTEXT_FEATURES: tuple[str, ...] = (
    "context_z", "context_gap", "context_rank", "context_centroid", "context_nearest", "context_day_mass",
    "context_day_max")
CONTEXT_TOP = 5


def context_prescore(rows: np.ndarray) -> np.ndarray:
    """The first-look score the context columns rank by: from a list's read-gate rows (`RERANK_FEATURES`
    columns before `CONTEXT_FEATURES`), the sum of its dense, second and adapted z-scores."""
    return np.asarray(rows[:, _DENSE_Z] + rows[:, _SECOND_Z] + rows[:, _ADAPTED_Z], dtype=np.float64)


def context_columns(prescore: np.ndarray, vectors: np.ndarray, days: Sequence[str], top: int = CONTEXT_TOP) -> np.ndarray:
    """`CONTEXT_FEATURES` of one candidate list: `prescore` per candidate, `vectors` their unit rows in
    the second embedder's space (zeros where unknown) and `days` their ISO event days ("" when none)."""
    s = np.asarray(prescore, dtype=np.float64)
    n = len(s)
    out = np.zeros((n, len(CONTEXT_FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    order = np.argsort(-s, kind="stable")
    rank = np.empty(n)
    rank[order] = np.arange(n)
    p = np.exp(s - s.max())
    p /= p.sum()
    best = order[:top]
    v = np.asarray(vectors, dtype=np.float64)
    sim = v @ v[best].T  # (n, top)
    itself = best[None, :] == np.arange(n)[:, None]
    weights = np.where(itself, 0.0, p[best][None, :])
    centroid = (sim * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    nearest = np.where(itself[:, :3], -1.0, sim[:, :3]).max(1)
    day = np.asarray(days, dtype=object)
    mass = np.zeros(n)
    largest = np.zeros(n)
    for d in set(days) - {""}:
        idx = np.flatnonzero(day == d)
        mass[idx] = p[idx].sum() - p[idx]
        if len(idx) > 1:
            ordered = np.sort(p[idx])
            largest[idx] = np.where(p[idx] == ordered[-1], ordered[-2], ordered[-1])
    out[:] = np.stack([(s - s.mean()) / (s.std() + 1e-6), s - s.max(), np.log1p(rank) / 6.0, centroid, nearest,
                       mass, largest], 1)
    return out


# The candidate's neighbours in the conversation: the turns among the candidates within
# `NEIGHBOUR_REACH` positions of it in the scope's stream of turns (`TURN_KEY`), same session — the
# best dense z-score, query-word cover and keyword score of the turns right beside it, the best dense
# z-score within the reach, how many turns the reach holds, and whether a turn right beside it is a
# candidate at all. A dialogue answers where it was asked: "What did you paint?" matches the
# question's words, "Here's the lake at sunrise" is the evidence next to it. A derived memory sits
# where the turn it restates sits (when that turn is a candidate too). Measured first (a LoCoMo-only
# head over the collected columns, 5 folds by conversation, 2026-12-07): WR@500 / ER@10 79.2 / 73.1
# -> 83.3 / 78.4 (single hop 86.3 -> 92.2, multi-hop 53.9 -> 56.7; see the README's Learned gates).
NEIGHBOUR_FEATURES: tuple[str, ...] = (
    "next_dense_z", "near_dense_z", "next_cover", "next_keyword", "near_count", "next_present")
NEIGHBOUR_REACH = 3
_NO_Z = -3.0  # a neighbour column's value where there is no such neighbour


def stream_positions(episodic: Sequence[bool], sources: Sequence[Sequence[str]], turns: Sequence[int | None],
                     sessions: Sequence[str | None]) -> tuple[list[int | None], list[str | None]]:
    """Each candidate's position in the scope's stream and its session: a turn's own (`turns`,
    `sessions`), a derived memory's those of the turn it restates first, when that turn is among the
    candidates (a profile written sessions later sits where its first source was said); else None."""
    of_source = {src[0]: (t, sess) for e, src, t, sess in zip(episodic, sources, turns, sessions, strict=True)
                 if e and len(src) == 1 and t is not None}
    at = [(t, sess) if e else (of_source.get(src[0], (None, None)) if src else (None, None))
          for e, src, t, sess in zip(episodic, sources, turns, sessions, strict=True)]
    return [a[0] for a in at], [a[1] for a in at]


def neighbour_columns(rows: np.ndarray, positions: Sequence[int | None], sessions: Sequence[str | None],
                      episodic: Sequence[bool], reach: int = NEIGHBOUR_REACH) -> np.ndarray:
    """`NEIGHBOUR_FEATURES` of one candidate list from its read-gate rows (the collected columns of
    `RERANK_FEATURES` at least: dense z-score, query cover, keyword score), each candidate's stream
    position (`stream_positions`; None: unknown) and session."""
    n = len(positions)
    out = np.zeros((n, len(NEIGHBOUR_FEATURES)), dtype=np.float32)
    out[:, 0] = out[:, 1] = _NO_Z
    turns: dict[tuple[str | None, int], list[int]] = {}
    for j, (p, sess, e) in enumerate(zip(positions, sessions, episodic, strict=True)):
        if e and p is not None:
            turns.setdefault((sess, p), []).append(j)
    if not turns:
        return out
    z, cover, keyword = rows[:, _DENSE_Z], rows[:, _COVER], rows[:, _KEYWORD]
    for i, (p, sess) in enumerate(zip(positions, sessions, strict=True)):
        if p is None:
            continue
        beside = [j for d in (-1, 1) for j in turns.get((sess, p + d), ())]
        near = [j for d in range(1, reach + 1) for q in (p - d, p + d) for j in turns.get((sess, q), ())]
        if beside:
            out[i, 0] = max(float(z[j]) for j in beside)
            out[i, 2] = max(float(cover[j]) for j in beside)
            out[i, 3] = max(float(keyword[j]) for j in beside)
            out[i, 5] = 1.0
        if near:
            out[i, 1] = max(float(z[j]) for j in near)
        out[i, 4] = math.log1p(len(near))
    return out


RERANK_FEATURES: tuple[str, ...] = (
    "dense", "dense_gap", "dense_z", "dense_rank", "dense_missing",
    "keyword_rel", "keyword_rank", "keyword_missing",
    "graph_rel", "graph_rank", "graph_missing",
    "fused", "fused_rank",
    *(f"type_{t}" for t in TYPES), "derived", "tokens",
    "query_cover", "speaker_named", "names_in_content", "has_digit", "has_date",
    "q_temporal", "q_temporal_x_date", "q_multi", "q_words", "recency",
    "q_window", "temporal_rank", "temporal_missing",
    *SECOND_FEATURES,
    *ADAPTED_FEATURES,
    *CONTEXT_FEATURES,
    *NEIGHBOUR_FEATURES,
)
# The columns the read path's candidate stage fills from what the retrievers returned; the second
# embedder's, the adapter's, the context's and the neighbours' come after them, so training can fill
# those from the candidates' texts and stream positions (and, for the adapter, the model of the right fold).
BASE_FEATURES: tuple[str, ...] = RERANK_FEATURES[:RERANK_FEATURES.index(SECOND_FEATURES[0])]
CONTEXT_AT = RERANK_FEATURES.index(CONTEXT_FEATURES[0])
_SECOND_AT, _ADAPTED_AT = RERANK_FEATURES.index(SECOND_FEATURES[0]), RERANK_FEATURES.index(ADAPTED_FEATURES[0])
NEIGHBOUR_AT = RERANK_FEATURES.index(NEIGHBOUR_FEATURES[0])
_DENSE_Z, _SECOND_Z, _ADAPTED_Z, _COVER, _KEYWORD = (
    RERANK_FEATURES.index(c) for c in ("dense_z", "second_z", "adapted_z", "query_cover", "keyword_rel"))


_ONE_HOT = {t: tuple(float(t == u) for u in TYPES) for t in TYPES}  # a candidate's type columns
_NO_TYPE = (0.0,) * len(TYPES)


def _rank_feature(rank: int | None, missing: float) -> float:
    return math.log1p(rank) / 6.0 if rank is not None else missing


def rerank_features(query: str, cands: Sequence[Candidate], *, window: bool = False) -> np.ndarray:
    """One row of `RERANK_FEATURES` per candidate (float32). `window`: the query named a period and
    the `temporal` ranking ran (its rank is then a feature; absent from it = not dated in the period)."""
    return with_second(rerank_base(query, cands, window=window), [c.second for c in cands],
                       [c.second_row for c in cands], [c.event_epoch for c in cands])


def rerank_base(query: str, cands: Sequence[Candidate], *, window: bool = False) -> np.ndarray:
    """`rerank_features` but for the columns that read the second embedder (`SECOND_FEATURES` and
    `CONTEXT_FEATURES`, zeros here; `with_second` fills them, and ignores the candidates' `second` and
    `second_row`): what the read path computes while the query's e5 row is still on its way."""
    n = len(cands)
    out = np.zeros((n, len(RERANK_FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    q_stems = content_stems(query)
    names = query_names(query)
    temporal = 1.0 if _TEMPORAL_Q.search(query) else 0.0
    multi = 1.0 if _MULTI_Q.search(query) else 0.0
    q_words = math.log1p(len(_WORD.findall(query))) / 4.0
    dense = np.array([c.dense if c.dense is not None else np.nan for c in cands], dtype=np.float64)
    have = ~np.isnan(dense)
    d_max = float(np.nanmax(dense)) if have.any() else 0.0
    d_mean = float(np.nanmean(dense)) if have.any() else 0.0
    d_std = float(np.nanstd(dense)) if have.sum() > 1 else 1.0
    kw_max = max((c.keyword or 0.0) for c in cands) or 1.0
    g_max = max((c.graph or 0.0) for c in cands) or 1.0
    missing = math.log1p(n + 1) / 6.0
    epochs = np.array([c.event_epoch if c.event_epoch is not None else np.nan for c in cands])
    if np.isnan(epochs).all():
        recency = np.zeros(n)
    else:
        filled = np.where(np.isnan(epochs), np.nanmin(epochs), epochs)
        order = (-filled).argsort(kind="stable").argsort(kind="stable")  # 0 = newest
        recency = order / max(1, n - 1)
    window_f = float(window)
    base: list[tuple[float, ...]] = []  # the base columns, one tuple a candidate, stored at once
    for i, c in enumerate(cands):
        words, low, has_digit, has_date = _text_signals(c.content)
        cover = len(q_stems & words) / len(q_stems) if q_stems else 0.0
        speaker = (c.speaker or "").lower()
        named = 1.0 if speaker and speaker in names else 0.0
        in_content = sum(1 for nm in names if nm in low) / len(names) if names else 0.0
        d = c.dense if c.dense is not None else d_mean
        base.append((
            d, d - d_max, (d - d_mean) / (d_std or 1.0), _rank_feature(c.dense_rank, missing),
            float(c.dense_rank is None),
            (c.keyword or 0.0) / kw_max, _rank_feature(c.keyword_rank, missing), float(c.keyword_rank is None),
            (c.graph or 0.0) / g_max, _rank_feature(c.graph_rank, missing), float(c.graph_rank is None),
            c.fused * 60.0, _rank_feature(c.fused_rank, missing),
            *_ONE_HOT.get(c.type, _NO_TYPE), float(c.derived), math.log1p(c.tokens) / 5.0,
            cover, named, in_content, has_digit, has_date,
            temporal, temporal * has_date, multi, q_words, float(recency[i]),
            window_f, _rank_feature(c.temporal_rank, missing) if window else missing,
            float(window and c.temporal_rank is None),
        ))
    out[:, :len(BASE_FEATURES)] = np.asarray(base, dtype=np.float64)
    adapted = np.array([c.adapted if c.adapted is not None else np.nan for c in cands], dtype=np.float64)
    out[:, _ADAPTED_AT:_ADAPTED_AT + len(ADAPTED_FEATURES)] = adapted_columns(adapted)
    episodic = [not c.derived for c in cands]
    positions, sessions = stream_positions(episodic, [c.sources for c in cands], [c.turn for c in cands],
                                           [c.session for c in cands])
    out[:, NEIGHBOUR_AT:] = neighbour_columns(out, positions, sessions, episodic)  # base columns only
    return out


def with_second(out: np.ndarray, second: Sequence[float | None], rows: Sequence[np.ndarray | None],
                epochs: Sequence[float | None]) -> np.ndarray:
    """`out` (`rerank_base`'s rows of a candidate list) with its second-embedder and context columns
    filled, in place, from each candidate's cosine to the query in that space, its row there (None:
    unknown) and its event time (`Candidate.event_epoch`); returns `out`."""
    if len(out) == 0:
        return out
    cos = np.array([x if x is not None else np.nan for x in second], dtype=np.float64)
    out[:, _SECOND_AT:_SECOND_AT + len(SECOND_FEATURES)] = second_columns(cos)
    dim = next((len(r) for r in rows if r is not None), 1)
    vectors = np.stack([r if r is not None else np.zeros(dim) for r in rows])
    out[:, CONTEXT_AT:CONTEXT_AT + len(CONTEXT_FEATURES)] = context_columns(
        context_prescore(out), vectors, [day_of(e) for e in epochs])
    return out


def day_of(epoch: float | None) -> str:
    """A memory's event day as the context columns compare them (ISO, UTC; "" when undated)."""
    return datetime.fromtimestamp(epoch, UTC).date().isoformat() if epoch is not None else ""


# -- write gate -----------------------------------------------------------------------------------

_FIRST_PERSON = re.compile(r"\b(I|my|me|I'm|I've|mine|we|our)\b")
_PHATIC = re.compile(r"^\s*(hi|hey|hello|thanks?|thank you|ok(ay)?|cool|great|nice|bye|lol|wow|yes|no|sure)\b[\s!.?]*$", re.I)
ROLES = ("user", "assistant", "system", "tool")
WRITE_FEATURES: tuple[str, ...] = (
    "words", "has_digit", "has_date", "first_person", "question", "exclaim", "names", "phatic",
    *(f"role_{r}" for r in ROLES),
)


# The write gate also reads the turn before (the previous message of the request, or the scope's
# last turn from its segmentation state): what a turn answers says whether it states a fact ("Where
# did you move?" -> "Berlin, in May."). Measured before adding it (5 folds by conversation, the
# write head as shipped): AUROC 0.810 -> 0.827 on LoCoMo, 0.775 -> 0.788 on REALTALK; the previous
# turn's embedding as well lost on REALTALK (0.763), so only its signals and cosine are read.
PREVIOUS_FEATURES: tuple[str, ...] = (*(f"prev_{f}" for f in WRITE_FEATURES), "prev_cosine", "prev_present")
WRITE_GATE_FEATURES: tuple[str, ...] = (*WRITE_FEATURES, *PREVIOUS_FEATURES)


def with_previous(embeddings: np.ndarray, signals: np.ndarray,
                  last: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The write gate's side rows (`WRITE_GATE_FEATURES`) of consecutive turns: each turn's own
    `write_features`, then its previous turn's, their embeddings' cosine and a presence flag (zeros
    where there is no previous turn). Row i's previous turn is row i - 1; the first row's is `last`
    (embedding, signals), the scope's turn before this batch, when there is one."""
    emb = np.asarray(embeddings, dtype=np.float32)
    own = np.asarray(signals, dtype=np.float32).reshape(len(emb), len(WRITE_FEATURES))
    prev = np.zeros_like(own)
    cos = np.zeros((len(emb), 1), dtype=np.float32)
    present = np.zeros((len(emb), 1), dtype=np.float32)
    if len(emb) > 1:
        prev[1:] = own[:-1]
        cos[1:, 0] = (emb[1:] * emb[:-1]).sum(1)
        present[1:] = 1.0
    if len(emb) and last is not None:
        last_emb, last_sig = (np.asarray(x, dtype=np.float32) for x in last)
        if last_emb.shape == emb[0].shape and last_sig.shape == own[0].shape:  # else: another embedder's state
            prev[0], cos[0, 0], present[0] = last_sig, float(emb[0] @ last_emb), 1.0
    return np.hstack([own, prev, cos, present])


def with_previous_by_group(embeddings: np.ndarray, signals: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """`with_previous` over rows that hold several streams one after the other (`groups[i]` names
    row i's conversation): a stream's first turn has no previous turn."""
    out = np.zeros((len(groups), len(WRITE_GATE_FEATURES)), dtype=np.float32)
    start = 0
    for end in range(1, len(groups) + 1):
        if end == len(groups) or groups[end] != groups[start]:
            out[start:end] = with_previous(embeddings[start:end], signals[start:end])
            start = end
    return out


LENGTH_FLOOR = 8


def per_length(scores: np.ndarray, lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """The read gate's order for a context budget: expected evidence per unit of length.

    The reranker is trained listwise (softmax over a query's candidates), so exp(score) is
    proportional to a candidate's chance of being the evidence; dividing by its length (tokens in
    the service, words in the evaluation; at least `LENGTH_FLOOR`) is the knapsack's greedy order
    for packing a budget. Measured (5-fold by conversation, 2026-12-04): ordering by the raw score
    favoured long memories (episode digests, restated facts: top-10 mean 66 words against the fused
    order's 23) and lost WR@500 to the fused order (LoCoMo 59.7 vs 68.7); per length it gains
    (75.6)."""
    out: np.ndarray = np.asarray(scores, dtype=np.float64) - np.log(
        np.maximum(np.asarray(lengths, dtype=np.float64), LENGTH_FLOOR))
    return out


def per_token_order(scores: np.ndarray, lengths: Sequence[int] | np.ndarray) -> list[int]:
    """Candidate indices in the read gate's order (`per_length`, best first); ties keep the given
    (fused) order."""
    return [int(i) for i in np.argsort(-per_length(scores, lengths), kind="stable")]


def write_features(role: str, text: str) -> np.ndarray:
    """The heuristic signals of a message, as the write gate's side features."""
    words = _WORD.findall(text)
    return np.array([
        math.log1p(len(words)) / 5.0,
        1.0 if _DIGIT.search(text) else 0.0,
        1.0 if _DATE_WORD.search(text) else 0.0,
        1.0 if _FIRST_PERSON.search(text) else 0.0,
        1.0 if "?" in text else 0.0,
        1.0 if "!" in text else 0.0,
        min(1.0, len(_CAPITALISED.findall(text)) / 5.0),
        1.0 if _PHATIC.match(text) else 0.0,
        *(float(role == r) for r in ROLES),
    ], dtype=np.float32)


# -- query router ---------------------------------------------------------------------------------

ROUTES: tuple[str, ...] = ("dense", "keyword", "graph")
ROUTE_FEATURES: tuple[str, ...] = ("q_words", "q_temporal", "q_multi", "q_names", "q_digit")


def route_features(query: str) -> np.ndarray:
    return np.array([
        math.log1p(len(_WORD.findall(query))) / 4.0,
        1.0 if _TEMPORAL_Q.search(query) else 0.0,
        1.0 if _MULTI_Q.search(query) else 0.0,
        min(1.0, len(query_names(query)) / 3.0),
        1.0 if _DIGIT.search(query) else 0.0,
    ], dtype=np.float32)


# -- what each head of the gate model reads (torch-free: a remote client checks a worker with it) --

HEAD_FEATURES: dict[str, tuple[str, ...]] = {"rerank": RERANK_FEATURES, "write": WRITE_GATE_FEATURES,
                                             "route": ROUTE_FEATURES}


def head_spec(head: str, **shape: Any) -> dict[str, Any]:
    """What the manifest records of a head: its shape and the feature names it was trained on."""
    if head == "query":  # the query adapter reads the query embedding only
        return {**shape}
    if head == "second":  # the query embedding, projected into the second embedder's space
        return {"second_embedder": SECOND_EMBEDDER, **shape}
    spec: dict[str, Any] = {"features": list(HEAD_FEATURES[head]), **shape}
    if head == "route":
        spec["outputs"] = list(ROUTES)
    if head == "rerank":  # whose space the `SECOND_FEATURES` cosines are in
        spec["second_embedder"] = SECOND_EMBEDDER
    return spec


# What the cross-encoder stage reads (`memsvc.learn.cross.pair_text`): one sequence, the query, then the
# memory with its event day first. A model trained on another input must not be served.
CROSS_INPUT = "query [SEP] (day month year) content"


def pair_text(content: str, day: str) -> str:
    """A memory as the cross-encoder reads it: `(8 May 2023) Caroline: …` (the day only when known)."""
    if not day:
        return content
    try:
        d = date.fromisoformat(day)
    except ValueError:
        return content
    return f"({d.day} {d.strftime('%B')} {d.year}) {content}"


def memory_text(cube: Any) -> str:
    """A stored memory as the cross-encoder reads it (its event day, else the day it became valid)."""
    when = cube.event_time or cube.valid_from
    return pair_text(cube.content, when.date().isoformat() if when is not None else "")


def compatible(head: str, spec: dict[str, Any]) -> bool:
    """A head trained on other features than this code computes (or one it does not know) must not
    be used. A read gate trained before the neighbour columns were appended (`NEIGHBOUR_FEATURES`, the
    last of `RERANK_FEATURES`) reads the columns before them (`RerankHead` keeps to its own width)."""
    if head == "cross":
        return spec.get("input") == CROSS_INPUT and isinstance(spec.get("layers"), int)
    if head == "query":
        return "dim" in spec
    if head == "second":
        return "dim" in spec and "out_dim" in spec and spec.get("second_embedder") == SECOND_EMBEDDER
    if head == "rerank":  # trained on the columns of today's rows up to the neighbours' at least
        features = spec.get("features")
        return (isinstance(features, list) and len(features) >= NEIGHBOUR_AT
                and features == list(RERANK_FEATURES[:len(features)])
                and spec.get("second_embedder") == SECOND_EMBEDDER)
    return head in HEAD_FEATURES and spec.get("features") == head_spec(head)["features"] and (
        head != "route" or spec.get("outputs") == list(ROUTES))
