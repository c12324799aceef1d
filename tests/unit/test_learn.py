"""The learning loop's pure parts: metrics, folds, features, packing without restating, artefacts."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from memsvc.learn import gates as G
from memsvc.learn.artefact import Manifest, read_manifest, sha256_file
from memsvc.learn.features import (
    ADAPTED_FEATURES,
    BASE_FEATURES,
    CONTEXT_AT,
    CONTEXT_FEATURES,
    LENGTH_FLOOR,
    NEIGHBOUR_AT,
    NEIGHBOUR_FEATURES,
    PREVIOUS_FEATURES,
    RERANK_FEATURES,
    SECOND_FEATURES,
    WRITE_FEATURES,
    WRITE_GATE_FEATURES,
    Candidate,
    adapted_columns,
    context_columns,
    context_prescore,
    neighbour_columns,
    per_length,
    rerank_base,
    rerank_features,
    second_columns,
    stream_positions,
    with_previous,
    with_previous_by_group,
    with_second,
    write_features,
)
from memsvc.learn.nets import QueryAdapter
from memsvc.learn.train import (
    AdapterList,
    ListGroup,
    adapt_queries,
    auroc,
    fit_adapter,
    fit_projection,
    fit_reranker,
    folds_by_group,
    lambda_loss,
    project_queries,
    score_lists,
)
from memsvc.models import MemoryCube, MemoryType
from memsvc.read import _Candidate, restated
from memsvc.retrieval.fusion import Fused
from memsvc.retrieval.packing import pack
from memsvc.text_cache import CACHED_CHARS


def test_auroc_is_the_rank_statistic_with_ties_shared() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([1, 2, 3], [0, 1, 1]) == 1.0
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_folds_keep_each_scene_in_one_fold_and_mix_tasks() -> None:
    groups = [f"locomo/conv-{i % 7}" for i in range(70)] + [f"tmd/{i % 3}" for i in range(30)]
    folds = folds_by_group(groups, 5)
    by_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds, strict=True):
        by_group.setdefault(g, set()).add(f)
    assert all(len(v) == 1 for v in by_group.values())
    assert sorted({next(iter(by_group[f"locomo/conv-{i}"])) for i in range(7)}) == [0, 1, 2, 3, 4]
    assert folds == folds_by_group(groups, 5)  # seeded


def _cand(content: str, speaker: str | None, dense: float, rank: int, **kw: object) -> Candidate:
    base: dict[str, object] = dict(type="episodic", content=content, speaker=speaker, derived=False, tokens=8,
                                   event_epoch=1.7e9, dense=dense, keyword=None, graph=None, dense_rank=rank,
                                   keyword_rank=None, graph_rank=None, fused=1 / (60 + rank), fused_rank=rank)
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


def test_rerank_features_read_names_words_and_scores() -> None:
    x = rerank_features("When did Caroline go to the support group?", [
        _cand("Caroline: I went to a support group yesterday.", "Caroline", 0.7, 1, keyword=3.0, keyword_rank=1),
        _cand("Melanie: I painted a sunset.", "Melanie", 0.3, 2),
    ])
    col = {name: i for i, name in enumerate(RERANK_FEATURES)}
    assert x.shape == (2, len(RERANK_FEATURES)) and x.dtype == np.float32
    assert x[0, col["speaker_named"]] == 1.0 and x[1, col["speaker_named"]] == 0.0
    # query words {caroline, support, group}: all in the first, none in the second
    assert x[0, col["query_cover"]] == 1.0 and x[1, col["query_cover"]] == 0.0
    assert x[0, col["dense_gap"]] == 0.0 and x[1, col["dense_gap"]] == pytest.approx(-0.4)
    assert x[0, col["keyword_missing"]] == 0.0 and x[1, col["keyword_missing"]] == 1.0
    assert x[0, col["q_temporal_x_date"]] == 1.0 and x[1, col["q_temporal_x_date"]] == 0.0
    assert rerank_features("anything", []).shape == (0, len(RERANK_FEATURES))


def test_rerank_features_read_long_memories_as_short_ones() -> None:
    """Texts past the signal cache's length take the uncached path and read the same."""
    short = "Caroline: I went to a support group yesterday, 3 of us."
    long = short + " and then we talked for hours" * (CACHED_CHARS // 20)
    assert len(short) <= CACHED_CHARS < len(long)
    x = rerank_features("When did Caroline go to the support group?",
                        [_cand(short, "Caroline", 0.7, 1), _cand(long, "Caroline", 0.7, 2)])
    col = {name: i for i, name in enumerate(RERANK_FEATURES)}
    for name in ("query_cover", "speaker_named", "names_in_content", "has_digit", "has_date"):
        assert x[0, col[name]] == x[1, col[name]] == 1.0, name


def test_rerank_features_mark_the_period_a_query_names() -> None:
    cands = [_cand("Caroline: we talked about the trip.", "Caroline", 0.5, 1, temporal_rank=1),
             _cand("Melanie: I painted a sunset.", "Melanie", 0.6, 2)]
    col = {name: i for i, name in enumerate(RERANK_FEATURES)}
    named = rerank_features("What did we chat about on February 21st?", cands, window=True)
    assert named[0, col["q_window"]] == 1.0 and named[1, col["q_window"]] == 1.0
    # dated in the period (ranked first there) vs not dated in it
    assert named[0, col["temporal_missing"]] == 0.0 and named[1, col["temporal_missing"]] == 1.0
    assert named[0, col["temporal_rank"]] < named[1, col["temporal_rank"]]
    # no period named: the temporal columns say nothing about any candidate
    plain = rerank_features("What did we chat about?", cands)
    assert plain[0, col["q_window"]] == 0.0
    assert plain[0, col["temporal_missing"]] == plain[1, col["temporal_missing"]] == 0.0
    assert plain[0, col["temporal_rank"]] == plain[1, col["temporal_rank"]]


def test_write_features_flag_phatic_and_role() -> None:
    col = {name: i for i, name in enumerate(WRITE_FEATURES)}
    phatic = write_features("user", "thanks!")
    fact = write_features("assistant", "I moved to Berlin in May 2023.")
    assert phatic[col["phatic"]] == 1.0 and fact[col["phatic"]] == 0.0
    assert fact[col["role_assistant"]] == 1.0 and fact[col["has_digit"]] == 1.0


def test_the_write_gate_reads_each_turn_with_the_one_before_it() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = ["Where did you move?", "Berlin, in May 2023.", "thanks!"]
    own = np.stack([write_features("user", t) for t in texts])
    rows = with_previous(emb, own)
    col = {name: i for i, name in enumerate(WRITE_GATE_FEATURES)}
    w = len(WRITE_FEATURES)
    assert rows.shape == (3, w + len(PREVIOUS_FEATURES)) and list(WRITE_GATE_FEATURES[:w]) == list(WRITE_FEATURES)
    np.testing.assert_array_equal(rows[:, :w], own)
    # the first turn has no previous one: zeros and no presence flag
    assert not rows[0, w:].any()
    np.testing.assert_array_equal(rows[1:, w:2 * w], own[:-1])
    assert rows[1, col["prev_question"]] == 1.0 and rows[2, col["prev_has_digit"]] == 1.0
    np.testing.assert_allclose(rows[1:, col["prev_cosine"]], (emb[1:] * emb[:-1]).sum(1), rtol=1e-6)
    assert rows[1:, col["prev_present"]].tolist() == [1.0, 1.0]
    # the scope's last turn before the batch is the first row's previous turn; one of another
    # embedder's width is ignored
    last = (emb[2], own[2])
    first = with_previous(emb[:1], own[:1], last)[0]
    np.testing.assert_array_equal(first[w:2 * w], own[2])
    assert first[col["prev_cosine"]] == pytest.approx(float(emb[0] @ emb[2])) and first[col["prev_present"]] == 1.0
    assert not with_previous(emb[:1], own[:1], (np.ones(4, np.float32), own[2]))[0, w:].any()
    # split in two requests, the second carrying the first's last turn, the rows are the same
    np.testing.assert_allclose(np.vstack([with_previous(emb[:2], own[:2]), with_previous(emb[2:], own[2:], (emb[1], own[1]))]),
                               rows, rtol=1e-6)
    # several conversations one after the other: each starts without a previous turn
    grouped = with_previous_by_group(np.vstack([emb, emb]), np.vstack([own, own]), ["a"] * 3 + ["b"] * 3)
    np.testing.assert_allclose(grouped, np.vstack([rows, rows]), rtol=1e-6)


def _packed(cube: MemoryCube, tokens: int = 5) -> _Candidate:
    return _Candidate(cube, Fused(cube.id, 0.0), cube.content, tokens)


def test_packing_skips_a_fact_whose_turn_is_already_chosen_but_keeps_a_turn_after_its_fact() -> None:
    mk = lambda t, c, s: MemoryCube(tenant="t", user_id="u", type=t, content=c, source_ids=s)  # noqa: E731
    turn = mk(MemoryType.EPISODIC, "Caroline: I live in Berlin now.", ["m1"])
    fact = mk(MemoryType.SEMANTIC, "Caroline lives in Berlin.", ["m1"])
    other = mk(MemoryType.SEMANTIC, "Caroline has a cat.", ["m2"])
    chosen = pack([_packed(turn), _packed(fact), _packed(other)], top_k=10, token_budget=None,
                  cost=lambda c: c.tokens, redundant=restated)
    assert [c.cube.id for c in chosen] == [turn.id, other.id]
    chosen = pack([_packed(fact), _packed(turn)], top_k=10, token_budget=None, cost=lambda c: c.tokens,
                  redundant=restated)
    assert [c.cube.id for c in chosen] == [fact.id, turn.id]


def test_reranker_learns_a_separable_signal_and_the_artefact_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(60):
        x = rng.normal(size=(30, len(RERANK_FEATURES))).astype(np.float32)
        y = np.zeros(30)
        y[rng.integers(30)] = 1
        x[y == 1, 0] += 3.0  # the gold candidate has a higher first feature
        groups.append(ListGroup(x, y))
    model = fit_reranker(groups, steps=150)
    top = [int(np.argmax(s)) for s in score_lists(model, [g.features for g in groups])]
    assert np.mean([g.labels[t] for g, t in zip(groups, top, strict=True)]) >= 0.9
    manifest = Manifest(name=G.NAME, version="test", metrics={"rerank": {"x": 1}},
                        heads={"rerank": G.head_spec("rerank", hidden=64), "query": G.head_spec("query", dim=8)})
    G.save(tmp_path, {"rerank": model, "query": QueryAdapter(8)}, manifest)
    loaded, heads = G.load(tmp_path)
    assert read_manifest(tmp_path).metrics == {"rerank": {"x": 1}} == loaded.metrics
    assert len(sha256_file(tmp_path / "weights.pt")) == 64
    x = torch.from_numpy(groups[0].features)
    with torch.inference_mode():
        assert torch.allclose(heads["rerank"](x), model(x))


def test_the_lambda_loss_learns_every_gold_of_a_list_and_ignores_padding() -> None:
    rng = np.random.default_rng(1)
    groups = []
    for _ in range(60):
        n = int(rng.integers(20, 40))  # lists of different lengths: padded in a batch
        x = rng.normal(size=(n, len(RERANK_FEATURES))).astype(np.float32)
        y = np.zeros(n)
        y[rng.choice(n, size=3, replace=False)] = 1
        x[y == 1, 0] += 3.0
        groups.append(ListGroup(x, y))
    model = fit_reranker(groups, steps=150, loss="lambda")
    # all three gold candidates of a list at its top three
    tops = [set(np.argsort(-s)[:3]) for s in score_lists(model, [g.features for g in groups])]
    assert np.mean([len(t & set(np.flatnonzero(g.labels))) / 3 for g, t in zip(groups, tops, strict=True)]) >= 0.9
    # the loss of a list: its pairs only (padding adds nothing), smaller when its gold leads
    logits = torch.tensor([[2.0, 0.0, -1.0, -1e9], [-1.0, 0.0, 2.0, -1e9]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]] * 2)
    value = lambda_loss(logits, labels, mask)
    assert value[0] < value[1]
    assert torch.allclose(value, lambda_loss(logits[:, :3], labels[:, :3], mask[:, :3]))
    assert lambda_loss(logits, torch.zeros_like(labels), mask).tolist() == [0.0, 0.0]  # no gold, no pairs
    with pytest.raises(ValueError, match="listnet"):
        fit_reranker(groups[:2], steps=1, loss="hinge")


def test_a_head_trained_on_other_features_is_not_loaded(tmp_path: Path) -> None:
    model = fit_reranker([ListGroup(np.ones((3, len(RERANK_FEATURES)), np.float32), np.array([1, 0, 0]))], steps=2)
    spec = {**G.head_spec("rerank", hidden=64), "features": [*RERANK_FEATURES[:-1], "something_else"]}
    G.save(tmp_path, {"rerank": model}, Manifest(name=G.NAME, version="test", heads={"rerank": spec}))
    assert G.load(tmp_path)[1] == {}



def test_a_reranker_whose_second_cosines_came_from_another_embedder_is_not_loaded() -> None:
    from memsvc.learn.features import compatible

    spec = G.head_spec("rerank", hidden=64)
    assert spec["second_embedder"] == "multilingual-e5-small-q4" and compatible("rerank", spec)
    assert not compatible("rerank", {**spec, "second_embedder": "another-e5"})
    assert not compatible("rerank", {k: v for k, v in spec.items() if k != "second_embedder"})


def test_per_length_orders_by_expected_evidence_per_token() -> None:
    # Equal scores: the shorter memory first; a memory twice as likely and twice as long ties.
    scores = np.array([0.0, 0.0, math.log(2.0)])
    keys = per_length(scores, [20, 10, 20])
    assert keys[1] == pytest.approx(keys[2]) and keys[0] < keys[1]
    # Below the floor, length no longer helps: a 1-token memory is not 8 times better than an 8-token one.
    assert per_length(np.zeros(2), [1, LENGTH_FLOOR])[0] == per_length(np.zeros(2), [1, LENGTH_FLOOR])[1]


def test_adapted_columns_rank_within_the_list_and_stand_in_for_unknown_cosines() -> None:
    cols = adapted_columns(np.array([0.2, 0.6, np.nan, 0.4]))
    assert cols.shape == (4, len(ADAPTED_FEATURES))
    value, gap, z, rank = cols.T
    assert value[2] == pytest.approx(0.4) and gap[1] == 0.0 and gap[0] == pytest.approx(-0.4)
    assert rank[1] < rank[3] < rank[0] < rank[2]  # best first; the unknown one last
    assert z[1] > 0 > z[0]
    none = adapted_columns(np.full(3, np.nan))
    assert (none[:, :3] == 0).all() and len(set(none[:, 3])) == 1
    assert adapted_columns(np.zeros(0)).shape == (0, len(ADAPTED_FEATURES))


def test_rerank_rows_hold_the_adapted_columns_of_the_candidates_before_the_context() -> None:
    def c(adapted: float | None) -> Candidate:
        return Candidate(type="episodic", content="Caroline: I moved to Berlin.", speaker="Caroline", derived=False,
                         tokens=8, event_epoch=None, dense=0.5, keyword=None, graph=None, dense_rank=1,
                         keyword_rank=None, graph_rank=None, fused=0.01, fused_rank=1, adapted=adapted)
    x = rerank_features("Where did Caroline move?", [c(0.3), c(0.7), c(None)])
    at = len(BASE_FEATURES) + len(SECOND_FEATURES)
    np.testing.assert_allclose(x[:, at:at + len(ADAPTED_FEATURES)], adapted_columns(np.array([0.3, 0.7, np.nan])))


def test_rerank_rows_hold_the_second_embedders_columns_between_the_base_and_the_adapters() -> None:
    def c(second: float | None, adapted: float | None) -> Candidate:
        return Candidate(type="episodic", content="Caroline: I moved to Berlin.", speaker="Caroline", derived=False,
                         tokens=8, event_epoch=None, dense=0.5, keyword=None, graph=None, dense_rank=1,
                         keyword_rank=None, graph_rank=None, fused=0.01, fused_rank=1, adapted=adapted, second=second)
    x = rerank_features("Where did Caroline move?", [c(0.8, None), c(None, 0.2), c(0.1, 0.4)])
    assert (*BASE_FEATURES, *SECOND_FEATURES, *ADAPTED_FEATURES, *CONTEXT_FEATURES, *NEIGHBOUR_FEATURES) == RERANK_FEATURES
    at = len(BASE_FEATURES)
    np.testing.assert_allclose(x[:, at:at + len(SECOND_FEATURES)], second_columns(np.array([0.8, np.nan, 0.1])))
    after = at + len(SECOND_FEATURES)
    np.testing.assert_allclose(x[:, after:after + len(ADAPTED_FEATURES)], adapted_columns(np.array([np.nan, 0.2, 0.4])))
    value, gap, _, rank = x[:, at:at + len(SECOND_FEATURES)].T
    assert value[0] == pytest.approx(0.8) and gap[2] == pytest.approx(-0.7) and rank[0] < rank[2] < rank[1]


def test_context_columns_read_the_first_looks_top_and_the_candidates_day() -> None:
    # 0 and 1 lead the first look; 2 says what 0 says (same e5 row), 3 is undated, 4 shares 1's day
    rows = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=np.float32)
    prescore = np.array([3.0, 2.0, 0.0, -1.0, -2.0])
    days = ["2023-05-08", "2023-06-01", "2023-05-08", "", "2023-06-01"]
    x = context_columns(prescore, rows, days, top=2)
    assert x.shape == (5, len(CONTEXT_FEATURES))
    p = np.exp(prescore - prescore.max())
    p /= p.sum()
    col = {name: x[:, i] for i, name in enumerate(CONTEXT_FEATURES)}
    np.testing.assert_allclose(col["context_rank"], np.log1p(np.arange(5)) / 6.0, rtol=1e-6)
    np.testing.assert_allclose(col["context_gap"], prescore - 3.0)
    # the top two leave themselves out (each sees only the other: orthogonal); 2 sits on 0's row
    np.testing.assert_allclose(col["context_centroid"], [0.0, 0.0, p[0] / (p[0] + p[1]), 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(col["context_nearest"], [0.0, 0.0, 1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(col["context_day_mass"], [p[2], p[4], p[0], 0.0, p[1]], rtol=1e-5)
    np.testing.assert_allclose(col["context_day_max"], [p[2], p[4], p[0], 0.0, p[1]], rtol=1e-5)
    assert context_columns(np.zeros(0), np.zeros((0, 3)), []).shape == (0, len(CONTEXT_FEATURES))


def test_rerank_rows_end_with_the_context_of_the_list_from_the_candidates_e5_rows() -> None:
    def c(i: int, row: np.ndarray | None) -> Candidate:
        return Candidate(type="episodic", content=f"Caroline: I moved to Berlin ({i}).", speaker="Caroline",
                         derived=False, tokens=8, event_epoch=1.7e9 + 86400 * (i % 2), dense=0.3 + 0.1 * i,
                         keyword=None, graph=None, dense_rank=i, keyword_rank=None, graph_rank=None, fused=0.01,
                         fused_rank=i, adapted=0.2, second=0.1 * i, second_row=row)
    rows = np.eye(4, dtype=np.float32)
    x = rerank_features("Where did Caroline move?", [c(0, rows[0]), c(1, rows[1]), c(2, None), c(3, rows[3])])
    known = rows.copy()
    known[2] = 0.0  # no stored row: unknown, orthogonal to every other
    days = [datetime.fromtimestamp(1.7e9 + 86400 * (i % 2), UTC).date().isoformat() for i in range(4)]
    np.testing.assert_allclose(x[:, CONTEXT_AT:NEIGHBOUR_AT], context_columns(context_prescore(x), known, days),
                               rtol=1e-5)
    assert x[2, RERANK_FEATURES.index("context_centroid")] == 0.0


def test_the_base_rows_read_no_second_embedder_and_with_second_adds_only_its_columns() -> None:
    """The read path computes `rerank_base` while the query's e5 row is on its way and `with_second`
    once it is there: the base must not read the e5 values, and the two steps give `rerank_features`."""
    def c(i: int, e5: bool) -> Candidate:
        return Candidate(type="episodic" if i % 3 else "semantic", content=f"Caroline: I moved to Berlin ({i}).",
                         speaker="Caroline", derived=not i % 3, tokens=8 + i, event_epoch=1.7e9 + 86400 * (i % 2),
                         dense=0.3 + 0.1 * i, keyword=0.5 if i % 2 else None, graph=None, dense_rank=i,
                         keyword_rank=i if i % 2 else None, graph_rank=None, fused=0.01 * i, fused_rank=i,
                         adapted=0.2 + 0.05 * i, second=(0.1 * i if i != 2 else None) if e5 else None,
                         second_row=(np.eye(5, dtype=np.float32)[i] if i != 2 else None) if e5 else None,
                         turn=10 + i, session="s1", sources=(f"m{i}",))
    known, blind = [c(i, True) for i in range(5)], [c(i, False) for i in range(5)]
    q = "Where did Caroline move?"
    base = rerank_base(q, known)
    np.testing.assert_array_equal(base, rerank_base(q, blind))  # the e5 values are not read
    e5_columns = [RERANK_FEATURES.index(f) for f in (*SECOND_FEATURES, *CONTEXT_FEATURES)]
    assert not base[:, e5_columns].any()
    full = with_second(base.copy(), [k.second for k in known], [k.second_row for k in known],
                       [k.event_epoch for k in known])
    np.testing.assert_array_equal(full, rerank_features(q, known))
    others = [j for j in range(len(RERANK_FEATURES)) if j not in e5_columns]
    np.testing.assert_array_equal(full[:, others], base[:, others])
    assert full[:, e5_columns].any() and full[2, RERANK_FEATURES.index("context_centroid")] == 0.0


def _rows(dense_z: list[float], cover: list[float], keyword: list[float]) -> np.ndarray:
    x = np.zeros((len(dense_z), len(RERANK_FEATURES)), np.float32)
    for name, values in (("dense_z", dense_z), ("query_cover", cover), ("keyword_rel", keyword)):
        x[:, RERANK_FEATURES.index(name)] = values
    return x


def test_neighbour_columns_read_the_turns_beside_a_candidate_in_its_session() -> None:
    # turns 10, 11, 13 of session a, turn 12 of session b (another session: not a neighbour), a fact
    # restating turn 11, and a fact whose turn is not a candidate
    episodic = [True, True, True, True, False, False]
    sources = [("m10",), ("m11",), ("m13",), ("m12",), ("m11",), ("m40",)]
    # (the fact restating turn 11 was written in a later session: it sits where turn 11 was said)
    positions, sessions = stream_positions(episodic, sources, [10, 11, 13, 12, None, None],
                                           ["a", "a", "a", "b", "c", "c"])
    assert positions == [10, 11, 13, 12, 11, None] and sessions == ["a", "a", "a", "b", "a", None]
    x = neighbour_columns(_rows([2.0, 0.5, -1.0, 3.0, 1.0, 0.0], [0.5, 1.0, 0.0, 1.0, 0.2, 0.0],
                                [0.1, 0.9, 0.0, 1.0, 0.0, 0.0]), positions, sessions, episodic)
    col = {name: x[:, i] for i, name in enumerate(NEIGHBOUR_FEATURES)}
    # turn 10: turn 11 beside it, 11 and 13 within reach (turn 12 is another session's)
    assert col["next_dense_z"][0] == pytest.approx(0.5) and col["near_dense_z"][0] == pytest.approx(0.5)
    assert col["next_cover"][0] == pytest.approx(1.0) and col["next_keyword"][0] == pytest.approx(0.9)
    assert col["near_count"][0] == pytest.approx(math.log1p(2)) and col["next_present"][0] == 1.0
    # turn 13: nothing beside it in its session (12 is b's), 10 and 11 within reach
    assert col["next_present"][2] == 0.0 and col["next_dense_z"][2] == pytest.approx(-3.0)
    assert col["near_dense_z"][2] == pytest.approx(2.0)
    # the fact sits where turn 11 sits, and does not count itself or its turn (same position)
    np.testing.assert_allclose(x[4], x[1])
    # no position: nothing known
    np.testing.assert_allclose(x[5], [-3.0, -3.0, 0.0, 0.0, 0.0, 0.0])
    assert neighbour_columns(np.zeros((0, len(RERANK_FEATURES))), [], [], []).shape == (0, len(NEIGHBOUR_FEATURES))


def test_rerank_rows_end_with_the_neighbour_columns_from_the_candidates_turns() -> None:
    def c(i: int, turn: int | None, derived: bool = False) -> Candidate:
        return Candidate(type="semantic" if derived else "episodic", content=f"Caroline: I moved to Berlin ({i}).",
                         speaker="Caroline", derived=derived, tokens=8, event_epoch=None, dense=0.3 + 0.1 * i,
                         keyword=None, graph=None, dense_rank=i, keyword_rank=None, graph_rank=None, fused=0.01,
                         fused_rank=i, turn=turn, session="s1", sources=(f"m{turn if turn is not None else 1}",))
    cands = [c(0, 4), c(1, 5), c(2, None, derived=True), c(3, 9)]
    x = rerank_features("Where did Caroline move?", cands)
    assert RERANK_FEATURES[NEIGHBOUR_AT:] == NEIGHBOUR_FEATURES and x.shape == (4, len(RERANK_FEATURES))
    expected = neighbour_columns(x, [4, 5, None, 9], ["s1", "s1", None, "s1"], [True, True, False, True])
    np.testing.assert_allclose(x[:, NEIGHBOUR_AT:], expected)
    assert x[0, NEIGHBOUR_AT + NEIGHBOUR_FEATURES.index("next_present")] == 1.0
    assert x[3, NEIGHBOUR_AT + NEIGHBOUR_FEATURES.index("next_present")] == 0.0
    assert CONTEXT_AT + len(CONTEXT_FEATURES) == NEIGHBOUR_AT


def test_a_read_gate_trained_before_the_neighbour_columns_reads_the_columns_before_them(tmp_path: Path) -> None:
    from memsvc.learn.features import SECOND_EMBEDDER, compatible
    from memsvc.learn.nets import RerankHead

    older = {"features": list(RERANK_FEATURES[:NEIGHBOUR_AT]), "second_embedder": SECOND_EMBEDDER, "hidden": 8}
    assert compatible("rerank", older) and compatible("rerank", {**older, "features": list(RERANK_FEATURES)})
    assert not compatible("rerank", {**older, "features": list(RERANK_FEATURES[:NEIGHBOUR_AT - 1])})
    assert not compatible("rerank", {**older, "features": list(reversed(RERANK_FEATURES))})
    assert not compatible("rerank", {**older, "second_embedder": "another"})
    head = G.build_head("rerank", older)
    assert isinstance(head, RerankHead) and head.n_features == NEIGHBOUR_AT
    head.eval()
    rows = torch.randn(5, len(RERANK_FEATURES))
    with torch.no_grad():
        torch.testing.assert_close(head(rows), head(rows[:, :NEIGHBOUR_AT]))
        moved = rows.clone()
        moved[:, NEIGHBOUR_AT:] += 10.0  # the columns it was not trained on change nothing
        torch.testing.assert_close(head(moved), head(rows))


def test_query_adapter_learns_to_move_questions_to_their_answers_and_round_trips(tmp_path: Path) -> None:
    # A space where every question sits off its answer by the same turn: the plain cosine ranks the
    # answer first only by chance, the adapted one almost always (held-out questions).
    rng = np.random.default_rng(0)
    d = 16
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    turn = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    answers = unit(rng.normal(size=(400, d))).astype(np.float32)
    questions = unit(answers @ turn + 0.05 * rng.normal(size=(400, d))).astype(np.float32)
    lists = []
    for i in range(400):
        rows = np.concatenate([[i], rng.choice(np.delete(np.arange(400), i), 19, replace=False)])
        lists.append(AdapterList(questions[i], rows, (rows == i).astype(np.float32)))
    model = fit_adapter(lists[:300], answers, steps=400, lr=0.02, penalty=1e-4)

    def hits(q: np.ndarray) -> float:
        return float(np.mean([int(np.argmax(answers[x.rows] @ v)) == 0 for x, v in zip(lists[300:], q, strict=True)]))

    plain, moved = hits(questions[300:]), hits(adapt_queries(model, questions[300:]))
    assert moved >= 0.9 > 0.5 > plain
    np.testing.assert_allclose(np.linalg.norm(adapt_queries(model, questions[:3]), axis=1), 1.0, rtol=1e-5)
    manifest = Manifest(name=G.NAME, version="test", heads={"query": G.head_spec("query", dim=d)})
    G.save(tmp_path, {"query": model}, manifest)
    loaded = G.load(tmp_path)[1]["query"]
    with torch.inference_mode():
        q = torch.from_numpy(questions[:5])
        assert torch.allclose(loaded(q), model(q))


def test_a_reranker_that_reads_the_adapter_is_not_loaded_without_it(tmp_path: Path) -> None:
    assert ADAPTED_FEATURES[0] in RERANK_FEATURES
    model = fit_reranker([ListGroup(np.ones((3, len(RERANK_FEATURES)), np.float32), np.array([1, 0, 0]))], steps=2)
    G.save(tmp_path, {"rerank": model}, Manifest(name=G.NAME, version="test",
                                                 heads={"rerank": G.head_spec("rerank", hidden=64)}))
    assert G.load(tmp_path)[1] == {}


def test_a_preset_cannot_both_adapt_its_dense_query_and_rerank() -> None:
    from memsvc.retrieval.presets import PRESETS, RetrievalPreset

    assert PRESETS["hybrid_temporal_adapted"].adapt_query and not PRESETS["hybrid_temporal_adapted"].rerank
    with pytest.raises(ValueError, match="do not combine"):
        RetrievalPreset("both", {"dense": 1.0}, rerank=True, adapt_query=True)


def test_the_projection_recovers_a_linear_map_between_two_spaces_and_saves_with_the_artefact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(16, 8))
    x = rng.normal(size=(2000, 16))
    y = x @ w0 + 0.01 * rng.normal(size=(2000, 8))
    model = fit_projection(x, y, ridge=1e-3)
    np.testing.assert_allclose(model.w.detach().numpy(), w0, atol=0.01)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    want = queries @ w0
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = project_queries(model, queries)
    np.testing.assert_allclose(got, want, atol=1e-3)  # unit rows, in the second space
    # a strong ridge shrinks the map towards zero (the direction survives the normalisation less well)
    assert np.abs(fit_projection(x, y, ridge=1e6).w.detach().numpy()).max() < 0.2 * np.abs(w0).max()
    # the artefact stores it as the `second` head and loads it back
    manifest = Manifest(name=G.NAME, version=G.VERSION, created=datetime.now(UTC), command="test", data={}, config={},
                        metrics={}, heads={"second": G.head_spec("second", dim=16, out_dim=8)})
    G.save(tmp_path, {"second": model}, manifest)
    _, heads = G.load(tmp_path)
    np.testing.assert_allclose(project_queries(heads["second"], queries), got, atol=1e-6)  # type: ignore[arg-type]
