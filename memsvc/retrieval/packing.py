"""Budget packing and reader ordering."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from memsvc.text_cache import CACHED_CHARS, short_text_cache

T = TypeVar("T")

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@short_text_cache(1 << 13, CACHED_CHARS)  # a memory's line is counted in every pool it joins
def count_tokens(text: str) -> int:
    """Approximate LLM tokens: words and punctuation marks, long words counted per 6 chars.

    Close to BPE counts for English prose without needing a tokenizer download.
    """
    total = 0
    for tok in _TOKEN.findall(text):
        total += max(1, (len(tok) + 5) // 6)
    return total


def pack(
    items: Iterable[T],
    *,
    top_k: int,
    token_budget: int | None,
    cost: Callable[[T], int],
    redundant: Callable[[T, Sequence[T]], bool] | None = None,
) -> list[T]:
    """Greedy best-first selection: at most `top_k` items whose summed cost fits the budget.

    An item that does not fit is skipped and smaller later items may still fit; an item that
    `redundant(item, chosen)` says the chosen ones already state is skipped without cost.
    `items` must already be ordered best first; it is read only as far as needed (a lazy
    iterable loads no more than that).
    """
    chosen: list[T] = []
    spent = 0
    for item in items:
        if len(chosen) >= top_k:
            break
        if redundant is not None and redundant(item, chosen):
            continue
        c = cost(item)
        if token_budget is not None and spent + c > token_budget:
            continue
        chosen.append(item)
        spent += c
    return chosen


def edge_order(items: Sequence[T]) -> list[T]:
    """Reorder best-first items so the strongest sit at both ends ("lost in the middle").

    [1, 2, 3, 4, 5] -> [1, 3, 5, 4, 2]: ranks 1 and 2 at the edges, the weakest in the middle.
    """
    front = list(items[0::2])
    back = list(items[1::2])
    back.reverse()
    return front + back
