"""Skill controllers without learning: every skill on every span, and the cards' own triggers.

Both only offer a skill to a span whose role the card lists (`roles`): that is the card's
constraint, not a choice. The learned controller (`memsvc.skills.policy`) chooses among the same
candidates; these two are its baselines and its fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from memsvc.skills.cards import SkillCard
from memsvc.skills.types import Span


def candidates(span: Span, cards: Sequence[SkillCard]) -> list[SkillCard]:
    """The controller-selected cards a span may run: its role is one the card reads."""
    return [c for c in cards if c.selection == "controller" and span.role.value in c.roles]


@lru_cache(maxsize=128)
def _trigger(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I | re.M)


def triggered(card: SkillCard, span: Span) -> bool:
    """The card's `parameters.trigger` (its "When to use" as a pattern) matches the span; a card
    without a trigger always applies."""
    pattern = card.parameters.get("trigger")
    return pattern is None or bool(_trigger(str(pattern)).search(span.text))


_SENTENCE_NAME = re.compile(r"(?:^|(?<=[.!?] ))[A-Z][a-z]+ ")


def slotted(card: SkillCard, span: Span) -> bool:
    """One of the card's single-valued slots (`parameters.slots`: residence, employer, a name…)
    matches the span, read in the first person or with a sentence's leading name as "I" ("Caroline
    moved to Munich"), as the statements executor reads a named subject: what the span states may
    close the slot's earlier value, so a pruning controller never vetoes it."""
    slots = card.parameters.get("slots") or []
    if not slots:
        return False
    texts = (span.text, _SENTENCE_NAME.sub("I ", span.text))
    return any(_trigger(str(s["pattern"])).search(t) for s in slots if isinstance(s, dict) and "pattern" in s
               for t in texts)


class AllSkillsController:
    """Every skill a span's role allows, on every span that passes the write gate."""

    name = "all"

    def select(self, spans: Sequence[Span], embeddings: np.ndarray, cards: Sequence[SkillCard]) -> list[list[str]]:
        return [[c.id for c in candidates(s, cards)] for s in spans]

    def describe(self) -> dict[str, Any]:
        return {"kind": "all", "note": "every skill on every gated span"}


class TriggerController:
    """The fixed heuristic: a skill runs where its card's trigger pattern matches."""

    name = "heuristic"

    def select(self, spans: Sequence[Span], embeddings: np.ndarray, cards: Sequence[SkillCard]) -> list[list[str]]:
        return [[c.id for c in candidates(s, cards) if triggered(c, s)] for s in spans]

    def describe(self) -> dict[str, Any]:
        return {"kind": "heuristic", "note": "each card's parameters.trigger pattern"}
