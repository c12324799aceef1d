"""Read gate, first version: what kind of question a query is (rule-based)."""

from __future__ import annotations

import re
from enum import StrEnum


class QueryKind(StrEnum):
    TEMPORAL = "temporal"
    PREFERENCE = "preference"
    PROCEDURAL = "procedural"
    MULTI_HOP = "multi_hop"
    FACTUAL = "factual"


_TEMPORAL = re.compile(r"\b(when|what (?:day|date|year|month|time)|how long|since|before|after|ago|last (?:week|month|year)|yesterday|in \d{4})\b", re.I)
_PREFERENCE = re.compile(r"\b(like|likes|love|loves|prefer|prefers|favou?rite|enjoy|enjoys|hate|hates)\b", re.I)
_PROCEDURAL = re.compile(r"\b(how (?:do|to|can|should)|steps?|procedure|process|instructions?)\b", re.I)
_MULTI_HOP = re.compile(r"\b(both|and also|in common|compared?|relationship between|which of)\b", re.I)


def classify(query: str) -> QueryKind:
    if _TEMPORAL.search(query):
        return QueryKind.TEMPORAL
    if _PROCEDURAL.search(query):
        return QueryKind.PROCEDURAL
    if _PREFERENCE.search(query):
        return QueryKind.PREFERENCE
    if _MULTI_HOP.search(query):
        return QueryKind.MULTI_HOP
    return QueryKind.FACTUAL
