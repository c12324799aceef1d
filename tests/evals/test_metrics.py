"""Every metric on hand-made rankings, with exact values."""

from __future__ import annotations

import math

import pytest

from evals import metrics as M

HITS = [{"a"}, {"b", "c"}, set(), {"d"}]
WORDS = [100, 200, 300, 50]


def test_evidence_recall_at_k() -> None:
    gold = {"a", "d", "x"}
    assert M.recall_at_k(HITS, gold, 1) == 1 / 3
    assert M.recall_at_k(HITS, gold, 3) == 1 / 3
    assert M.recall_at_k(HITS, gold, 4) == 2 / 3
    assert M.recall_at_k(HITS, gold, 100) == 2 / 3
    assert M.recall_at_k(HITS, gold, 0) == 0.0
    assert M.recall_at_k([], gold, 5) == 0.0
    assert M.recall_at_k(HITS, set(), 5) == 0.0


def test_all_found() -> None:
    assert M.all_found_at_k(HITS, {"a", "d"}, 3) == 0.0
    assert M.all_found_at_k(HITS, {"a", "d"}, 4) == 1.0
    assert M.all_found_at_k(HITS, {"a", "x"}, 4) == 0.0
    assert M.all_found_at_k(HITS, set(), 4) == 0.0


def test_results_within_budget_stops_at_first_overflow() -> None:
    assert M.results_within_budget([100, 200, 300], 300) == 2  # 100 + 200 fits exactly
    assert M.results_within_budget([100, 200, 300], 299) == 1
    assert M.results_within_budget([100, 200, 300], 50) == 0
    assert M.results_within_budget([100, 200, 300], 10_000) == 3
    assert M.results_within_budget([400, 10, 10], 300) == 0  # no skipping past a long first result
    assert M.results_within_budget([], 300) == 0


def test_budget_recall() -> None:
    gold = {"a", "d"}
    assert M.budget_recall(HITS, WORDS, gold, 99) == 0.0
    assert M.budget_recall(HITS, WORDS, gold, 600) == 0.5  # first three results (600 words)
    assert M.budget_recall(HITS, WORDS, gold, 650) == 1.0
    assert M.all_found_within_budget(HITS, WORDS, gold, 600) == 0.0
    assert M.all_found_within_budget(HITS, WORDS, gold, 650) == 1.0


def test_doc_ranking_keeps_first_occurrence() -> None:
    assert M.doc_ranking([["a", "b"], ["b", "c"], [], ["a", "d"]]) == ["a", "b", "c", "d"]


def test_ndcg_binary() -> None:
    ranking = ["a", "b", "c", "d"]
    dcg = 1 / math.log2(2) + 1 / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert M.ndcg_at_k(ranking, {"a", "d"}, 10) == pytest.approx(dcg / idcg, abs=1e-12)
    assert M.ndcg_at_k(ranking, {"a", "d"}, 10) == pytest.approx(0.8772153153380493, abs=1e-12)
    assert M.ndcg_at_k(ranking, {"a", "d"}, 3) == pytest.approx(1 / idcg, abs=1e-12)
    assert M.ndcg_at_k(["a", "d"], {"a", "d"}, 10) == 1.0
    assert M.ndcg_at_k(["b", "c"], {"a"}, 10) == 0.0
    assert M.ndcg_at_k(ranking, set(), 10) == 0.0


def test_ndcg_graded_and_ideal_cut_at_k() -> None:
    ranking = ["d", "a"]
    rel = {"a": 2.0, "d": 1.0}
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert M.ndcg_at_k(ranking, rel, 10) == pytest.approx(expected, abs=1e-12)
    # five relevant documents, k = 2: the ideal has only two of them
    assert M.ndcg_at_k(["a", "b"], {"a", "b", "c", "d", "e"}, 2) == 1.0


def test_doc_recall_and_capped_recall() -> None:
    ranking = ["a", "b", "c"]
    gold = {"a", "c", "z"}
    assert M.doc_recall_at_k(ranking, gold, 1) == 1 / 3
    assert M.doc_recall_at_k(ranking, gold, 2) == 1 / 3
    assert M.doc_recall_at_k(ranking, gold, 3) == 2 / 3
    assert M.capped_recall_at_k(ranking, gold, 1) == 1.0
    assert M.capped_recall_at_k(ranking, gold, 2) == 0.5
    assert M.capped_recall_at_k(ranking, gold, 50) == 2 / 3
    assert M.doc_recall_at_k(ranking, set(), 3) == 0.0


def test_first_ranks() -> None:
    assert M.first_ranks(HITS + [{"a"}], {"a", "d", "x"}) == {"a": 1, "d": 4, "x": None}


def test_percentile_nearest_rank() -> None:
    assert M.percentile([40, 10, 30, 20], 50) == 20
    assert M.percentile([40, 10, 30, 20], 95) == 40
    assert M.percentile([40, 10, 30, 20], 25) == 10
    assert M.percentile(list(range(1, 101)), 95) == 95
    assert M.percentile([5.5], 95) == 5.5
    assert M.percentile([], 50) == 0.0


def test_mean() -> None:
    assert M.mean([1.0, 0.0, 0.5]) == 0.5
    assert M.mean([]) == 0.0


def test_content_words() -> None:
    assert M.content_words("The kids were painting sunsets!") == {"kid", "paint", "sunset"}
    assert M.content_words("I'm ok, a 5 k run") == {"5", "run"}


def test_states_source_copy_and_derived() -> None:
    source = "I went to a LGBTQ support group yesterday and it was so powerful."
    assert M.states_source("Caroline: " + source, source)
    # 3 of the source's 6 content words (lgbtq, support, group): exactly the 0.5 threshold
    assert M.states_source("Caroline attended an LGBTQ support group on 7 May 2023.", source)
    assert not M.states_source("Caroline attended an LGBTQ support group on 7 May 2023.", source, threshold=0.6)
    assert not M.states_source("Melanie likes painting sunsets with her kids.", source)


def test_states_source_fact_drawn_from_a_long_turn() -> None:
    turn = ("Caroline: Being a mom is awesome. I'm creating a library for when I have kids. I'm really "
            "looking forward to reading to them and opening up their minds.")
    # 4 of the memory's 4 content words (caroline, creat, library, kid) come from the turn's 11
    assert M.states_source("Caroline is creating a library for when Caroline has kids.", turn)
    # one shared word is never enough, however short the memory
    assert not M.states_source("Caroline cooks.", turn)
    assert not M.states_source("Caroline went to an LGBTQ+ counseling workshop last Friday.", turn)
    # a summary of many turns covers each only in small part
    summary = ("Caroline talked about adoption agencies, her counseling career, the pride parade, her art, "
               "a library for her future kids, horseback riding with her dad and a charity race.")
    assert not M.states_source(summary, turn)


def test_states_source_without_content_words() -> None:
    assert M.states_source("Caroline: ok!", "ok!")
    assert not M.states_source("Melanie: sure thing", "ok!")
