"""Offline fact extraction: first-person statements and stated preferences.

Rule-based and deterministic, so it runs without an LLM. Each fact states exactly one
source message, rewritten in the third person with the speaker's name, so the
fact reads on its own ("I moved to Berlin" -> "Alice moved to Berlin").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memsvc.graph.temporal import EMPLOYER, RESIDENCE
from memsvc.models import MemoryType

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|My|me|mine|myself)\b")

_PREFERENCE = re.compile(
    r"\b(?:I(?:'m| am)? (?:really |absolutely |totally |just |also |still |do |kind of |kinda )?"
    r"(?:love|like|enjoy|prefer|adore|hate|dislike|detest|can't stand|cannot stand|am into|'m into|am a fan of|'m a fan of)"
    r"|my (?:\w+ )?fav(?:ou?rite)?)\b",
    re.IGNORECASE,
)
_FACT = re.compile(
    r"\b(?:I(?:'m| am| was| have| had|'ve| used to| recently| just| finally| also)? "
    r"(?:live|lived|moved|relocated|work|worked|grew up|was born|born|study|studied|graduated|"
    r"majored|adopted|bought|own|owns|started|joined|married|divorced|retired|teach|taught|"
    r"speak|play|played|volunteer|volunteered|signed up|got|have|has|am allergic|am a|am an|'m a|'m an|"
    r"am from|'m from|was a|was an|became|quit|left|founded|run|ran|raise|raised|"
    r"collect|practice|practise|train|trained|visited|travel(?:l?ed)?|went)"
    r"|my (?:\w+ ){0,3}(?:is|are|was|were|called|named|lives|works|passed))\b",
    re.IGNORECASE,
)
_SLOTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bI(?:'ve| have)? (?:just |recently |finally )?(?:live|lives|living|moved|relocated|am based|'m based) (?:in|to)\b", re.I), RESIDENCE),
    (re.compile(r"\bI(?:'ve| have)? (?:just |recently )?(?:work|started working) (?:at|for)\b", re.I), EMPLOYER),
    (re.compile(r"\bmy ((?:\w+ ){0,2}?\w+?)(?:'s name)? (?:is|are|was) (?:called|named)\b", re.I), "name:{0}"),
    (re.compile(r"\bmy (fav(?:ou?rite)? (?:\w+ ){0,2}?\w+) (?:is|are)\b", re.I), "{0}"),
    (re.compile(r"\bmy ((?:\w+ )?(?:name|age|birthday|job|job title|occupation|email|phone number|address|hometown))(?: is|'s)\b", re.I), "{0}"),
]
_PHATIC = re.compile(r"^(?:ok(?:ay)?|thanks?(?: you)?|thx|lol|haha+|hi|hey|hello|bye|yes|no|yeah|yep|nope|cool|nice|great|sure)[\s!.?]*$", re.I)

_IRREGULAR_3P = {"am": "is", "have": "has", "do": "does", "go": "goes", "'m": "is", "'ve": "has"}
_UNINFLECTED = {
    "can", "could", "will", "would", "shall", "should", "may", "might", "must", "was", "were",
    "had", "did", "used", "also", "just", "really", "still", "recently", "finally", "never",
    "always", "absolutely", "totally", "kind", "kinda", "often", "usually", "sometimes", "already",
}


@dataclass(frozen=True)
class FactCandidate:
    type: MemoryType
    content: str
    slot: str | None
    skill: str


def is_phatic(text: str) -> bool:
    return bool(_PHATIC.match(text.strip()))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _third_person(verb: str) -> str:
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
        return f"{name} {_third_person(match.group(1))}"

    out = re.sub(r"\bI (\w+)", _subject, out)
    out = re.sub(r"\bI\b", name, out)
    out = re.sub(r"\b[Mm]y\b", f"{name}'s", out)
    out = re.sub(r"\b[Mm]ine\b", f"{name}'s", out)
    out = re.sub(r"\b[Mm]yself\b", name, out)
    out = re.sub(r"\bme\b", name, out)
    return out


def slot_of(sentence: str) -> str | None:
    """A key naming the single-valued attribute a sentence sets (e.g. residence), if any."""
    for pattern, template in _SLOTS:
        m = pattern.search(sentence)
        if m:
            groups = [g.lower().strip() for g in m.groups()]
            return template.format(*groups)
    return None


def extract_facts(text: str, speaker: str) -> list[FactCandidate]:
    """Facts and preferences a speaker states about themselves in one message."""
    found: list[FactCandidate] = []
    for sent in sentences(text):
        words = sent.split()
        if sent.endswith("?") or len(words) < 3 or len(words) > 60:
            continue
        if not _FIRST_PERSON.search(sent):
            continue
        if _PREFERENCE.search(sent):
            kind, skill = MemoryType.REFINED, "capture-preferences"
        elif _FACT.search(sent):
            kind, skill = MemoryType.SEMANTIC, "capture-personal-facts"
        else:
            continue
        content = to_third_person(sent, speaker)
        if not content.endswith((".", "!")):
            content += "."
        found.append(FactCandidate(kind, content, slot_of(sent), skill))
    return found


_STEP_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step \d+:?)\s+\S", re.I | re.M)
_SEQUENCE = re.compile(r"\bfirst\b.*\bthen\b", re.I | re.S)


def extract_procedure(text: str) -> bool:
    """True when a message lays out ordered steps (a numbered/bulleted list or first…then)."""
    return len(_STEP_LINE.findall(text)) >= 2 or bool(_SEQUENCE.search(text))
