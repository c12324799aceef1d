"""Retrieval metrics as pure functions over ranked results.

A ranked result list is given as `hits`: for each result in rank order, the set of gold-comparable
ids it is *credited* with (for memsvc: the `source_ids` whose content the memory states, see
`states_source`; for a baseline turn: its own id), plus the word count of its content.

- evidence recall@k: share of the gold ids credited to one of the first k results;
- budget recall@w: the same over the results that fit in a reader budget of w words of content
  (results are taken in rank order while the running word count stays within w; the first one that
  would exceed it ends the walk, nothing is cut in half);
- all-found@k: 1 when every gold id is credited within the first k results;
- nDCG@k, Recall@k, capped Recall@k (LMEB): over the document ranking obtained by listing each
  result's credited ids in rank order, first occurrence only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

Hits = Sequence[Collection[str]]


def recall_at_k(hits: Hits, gold: Collection[str], k: int) -> float:
    """Share of `gold` credited to one of the first `k` results (0.0 when there is no gold)."""
    if not gold:
        return 0.0
    found = set().union(*hits[:k]) if hits[:k] else set()
    return len(set(gold) & found) / len(set(gold))


def all_found_at_k(hits: Hits, gold: Collection[str], k: int) -> float:
    """1.0 when every gold id is credited within the first `k` results, else 0.0."""
    return 1.0 if gold and recall_at_k(hits, gold, k) == 1.0 else 0.0


def results_within_budget(word_counts: Sequence[int], budget: int) -> int:
    """How many leading results fit in `budget` words (the walk stops at the first that overflows)."""
    total = 0
    for n, words in enumerate(word_counts):
        total += words
        if total > budget:
            return n
    return len(word_counts)


def budget_recall(hits: Hits, word_counts: Sequence[int], gold: Collection[str], budget: int) -> float:
    return recall_at_k(hits, gold, results_within_budget(word_counts, budget))


def all_found_within_budget(hits: Hits, word_counts: Sequence[int], gold: Collection[str], budget: int) -> float:
    return all_found_at_k(hits, gold, results_within_budget(word_counts, budget))


def doc_ranking(hits: Iterable[Iterable[str]]) -> list[str]:
    """Flatten credited ids in rank order, keeping the first occurrence of each."""
    return list(dict.fromkeys(doc for hit in hits for doc in hit))


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, float] | Collection[str], k: int = 10) -> float:
    """nDCG@k with gain = relevance (binary when a collection is given) and log2(rank + 1) discount."""
    rel = dict(relevance) if isinstance(relevance, Mapping) else {d: 1.0 for d in relevance}
    dcg = sum(rel.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def doc_recall_at_k(ranking: Sequence[str], gold: Collection[str], k: int) -> float:
    """|gold ∩ top-k| / |gold|."""
    return len(set(ranking[:k]) & set(gold)) / len(set(gold)) if gold else 0.0


def capped_recall_at_k(ranking: Sequence[str], gold: Collection[str], k: int) -> float:
    """LMEB's R_cap@k = hits@k / min(|gold|, k)."""
    return len(set(ranking[:k]) & set(gold)) / min(len(set(gold)), k) if gold else 0.0


def first_ranks(hits: Hits, gold: Collection[str]) -> dict[str, int | None]:
    """1-based rank of the first result credited with each gold id (None when never)."""
    out: dict[str, int | None] = {g: None for g in gold}
    for rank, hit in enumerate(hits, start=1):
        for g in hit:
            if g in out and out[g] is None:
                out[g] = rank
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q% of values <= it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


# --- does a memory state its source? -------------------------------------------------------------

_STOPWORD_TEXT = """a an the and or but if then so of to in on at by for with from as is are was were be been
being am do does did have has had having i me my mine we us our you your he him his she her it its they them
their this that these those there here what which who whom when where why how all any both each few more most
other some such no nor not only own same than too very can will just should would could also about into over
after before up down out off again further once yeah oh hey hi okay ok really like got get im"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """Crude suffix stripping: a plural ending (-es/-s), then -ing/-ed, keeping at least 3 letters."""
    for group in (("es", "s"), ("ing", "ed")):
        for suffix in group:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased alphanumeric tokens of two or more characters (or digits), stop words removed,
    crude suffix stripping (`stem`)."""
    words = _WORD.findall(text.lower())
    return {stem(w) for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def states_source(memory_content: str, source_text: str, threshold: float = 0.5, min_shared: int = 2) -> bool:
    """Does the memory state (part of) the source's content?

    With S, M the content words of source and memory and shared = |S ∩ M|, true when either
    - the memory restates the source: shared ≥ `threshold` · |S| (an episodic cube `speaker: text`), or
    - the memory is drawn from the source: shared ≥ `threshold` · |M| and shared ≥ `min_shared` (a fact
      extracted from one sentence of a long turn).
    A summary listing many sources covers each of them only in small part and is credited with none
    of them unless it restates it. A source without content words (e.g. "ok!") is stated only by a
    memory containing its text. Pass the source as the message was written, `speaker: text`.
    """
    source = content_words(source_text)
    if not source:
        return source_text.strip().lower() in memory_content.lower()
    memory = content_words(memory_content)
    shared = len(source & memory)
    if shared >= threshold * len(source):
        return True
    return bool(memory) and shared >= min_shared and shared >= threshold * len(memory)
