"""Text helpers the offline skills share: sentences, phatic messages, first to third person.

The skill-specific patterns live in the skill cards (`skills/*.md`, `parameters`) and their
executors (`memsvc/skills/offline/`); what is here knows nothing about any skill.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_PHATIC = re.compile(r"^(?:ok(?:ay)?|thanks?(?: you)?|thx|lol|haha+|hi|hey|hello|bye|yes|no|yeah|yep|nope|cool|nice|great|sure)[\s!.?]*$", re.I)

_IRREGULAR_3P = {"am": "is", "have": "has", "do": "does", "go": "goes", "'m": "is", "'ve": "has"}
# Irregular past forms take no -s ("I went" -> "Ann went"); regular ones end in -ed.
_IRREGULAR_PAST = {
    "ate", "began", "became", "bought", "brought", "built", "came", "caught", "chose", "did", "drank", "drew",
    "drove", "fell", "felt", "flew", "forgot", "found", "gave", "got", "grew", "had", "heard", "held", "hung",
    "hurt", "kept", "knew", "lay", "led", "left", "lent", "lost", "made", "meant", "met", "paid", "ran", "rode",
    "rose", "said", "sang", "sat", "saw", "sent", "shook", "shot", "slept", "sold", "spent", "spoke", "stood",
    "stole", "swam", "taught", "thought", "threw", "told", "took", "understood", "went", "woke", "won", "wore",
    "wrote",
}
_UNINFLECTED = _IRREGULAR_PAST | {
    "can", "could", "will", "would", "shall", "should", "may", "might", "must", "was", "were",
    "had", "did", "used", "also", "just", "really", "still", "recently", "finally", "never",
    "always", "absolutely", "totally", "kind", "kinda", "often", "usually", "sometimes", "already",
}


def is_phatic(text: str) -> bool:
    return bool(_PHATIC.match(text.strip()))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def third_person_verb(verb: str) -> str:
    """`go` -> `goes`, `study` -> `studies`; past forms, modals and adverbs stay as they are."""
    low = verb.lower()
    if low in _IRREGULAR_3P:
        return _IRREGULAR_3P[low]
    if low in _UNINFLECTED or low.endswith("ed") or not low.isalpha():
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def to_third_person(sentence: str, name: str) -> str:
    """Rewrite first-person pronouns to `name`, inflecting the verb that follows "I"."""
    out = re.sub(r"\bI'm\b", f"{name} is", sentence)
    out = re.sub(r"\bI've\b", f"{name} has", out)
    out = re.sub(r"\bI'd\b", f"{name} would", out)
    out = re.sub(r"\bI'll\b", f"{name} will", out)
    out = re.sub(r"\bI am\b", f"{name} is", out)

    def _subject(match: re.Match[str]) -> str:
        return f"{name} {third_person_verb(match.group(1))}"

    out = re.sub(r"\bI (\w+)", _subject, out)
    out = re.sub(r"\bI\b", name, out)
    out = re.sub(r"\b[Mm]y\b", f"{name}'s", out)
    out = re.sub(r"\b[Mm]ine\b", f"{name}'s", out)
    out = re.sub(r"\b[Mm]yself\b", name, out)
    out = re.sub(r"\bme\b", name, out)
    return out


def as_sentence(text: str) -> str:
    """End a memory's content with a full stop unless it already ends a sentence."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."
