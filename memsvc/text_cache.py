"""A per-text cache for pure functions of a memory's text that the read path calls on every
candidate of every search (its lexical signals, its token count)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

R = TypeVar("R")

# Texts up to this long are cached; longer ones are computed each time, so a cache of n entries
# holds at most n short texts whatever the memories hold (a memory may hold 32,000 characters).
CACHED_CHARS = 500


def short_text_cache(maxsize: int, chars: int = CACHED_CHARS) -> Callable[[Callable[[str], R]], Callable[[str], R]]:
    """`lru_cache(maxsize)` for the texts of at most `chars` characters; the others are not cached."""
    def wrap(fn: Callable[[str], R]) -> Callable[[str], R]:
        cached = lru_cache(maxsize=maxsize)(fn)

        @wraps(fn)
        def call(text: str) -> R:
            return cached(text) if len(text) <= chars else fn(text)
        return call
    return wrap
