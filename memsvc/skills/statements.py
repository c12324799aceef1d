"""Offline handlers for what people say about themselves and others: facts and preferences
(`statements`), dated events (`events`), plans (`plans`) and relationships (`relations`).

Rule-based and deterministic, driven by the card's `parameters` (patterns, word lists,
thresholds), so they run without an LLM and the designer can refine them. Every speaker counts,
not only the scope's user: a sentence in the first person is about its speaker, and a sentence
whose subject is a capitalised name ("Caroline lives in Berlin") is about that person. Slots are
keyed by that subject, so one person's new residence never closes another's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from memsvc.learn.features import STOP
from memsvc.models import MemoryType
from memsvc.skills.cards import SkillCard
from memsvc.skills.types import Operation, OpKind, SkillContext, SkillResult, Span, slot_key
from memsvc.skills.when import MONTHS, WEEKDAYS, TimeMention, time_mentions
from memsvc.write.extract import as_sentence, sentences, third_person_verb, to_third_person

FIRST_PERSON = r"\b(I|I'm|I've|I'd|I'll|my|My|me|mine|myself)\b"
_NOT_NAMES = STOP | set(WEEKDAYS) | set(MONTHS) | {
    "yeah", "yes", "no", "thanks", "thank", "hey", "hi", "hello", "wow", "oh", "well", "so", "but", "and",
    "sorry", "congrats", "congratulations", "anyway", "also", "sure", "ok", "okay", "cool", "great", "nice",
    "awesome", "amazing", "that's", "it's", "there's", "here's", "what's", "let's", "everyone", "someone",
    "nobody", "everybody", "somebody", "life", "family", "today", "yesterday", "tomorrow", "last", "next",
}


def _json_key(parameters: dict[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True)


def _words(sentence: str) -> int:
    return len(sentence.split())


@dataclass(frozen=True)
class _Subject:
    """Whom a sentence is about: its speaker (first person) or a named person."""

    name: str
    key: str | None
    first_person: bool


def _named_subject(sentence: str, verbs3: re.Pattern[str]) -> str | None:
    """A capitalised name opening the sentence and followed by one of the statement verbs."""
    m = re.match(r"^(?P<name>[A-Z][a-z]+(?: [A-Z][a-z]+)?)(?:'s)? (?P<rest>.*)$", sentence)
    if not m or m.group("name").split()[0].lower() in _NOT_NAMES:
        return None
    return m.group("name") if verbs3.match(m.group("rest")) else None


def _subject(span: Span, sentence: str, first_person: re.Pattern[str], verbs3: re.Pattern[str] | None) -> _Subject | None:
    if first_person.search(sentence):
        return _Subject(span.speaker, span.subject_key, True)
    if verbs3 is not None:
        name = _named_subject(sentence, verbs3)
        if name is not None and (span.name or "").lower() != name.lower():
            return _Subject(name, name.lower(), False)
    return None


def _rewrite(sentence: str, subject: _Subject) -> str:
    return as_sentence(to_third_person(sentence, subject.name) if subject.first_person else sentence)


def _statement_ok(sentence: str, p: dict[str, Any]) -> bool:
    n = _words(sentence)
    return not sentence.rstrip().endswith("?") and int(p.get("min_words", 3)) <= n <= int(p.get("max_words", 60))


# -- statements: facts and preferences ------------------------------------------------------------


@dataclass(frozen=True)
class _StatementRules:
    first_person: re.Pattern[str]
    statement: re.Pattern[str]
    named: re.Pattern[str] | None
    exclude: re.Pattern[str] | None
    slots: tuple[tuple[re.Pattern[str], str], ...]


def _verb_forms(verbs: Sequence[str]) -> list[str]:
    """The verbs as they follow a named subject: present in the third person, past as is."""
    out: list[str] = []
    for v in verbs:
        head, _, rest = v.partition(" ")
        forms = {head, third_person_verb(head)} if head.isalpha() else {head}
        out += [f"{f} {rest}".strip() for f in sorted(forms)]
    return sorted(set(out), key=lambda s: (-len(s), s))


@lru_cache(maxsize=64)
def _statement_rules(key: str) -> _StatementRules:
    p = json.loads(key)
    verbs = [re.escape(v).replace(r"\ ", " ") for v in p.get("verbs", [])]
    alternation = "|".join(sorted(verbs, key=lambda s: (-len(s), s))) or "(?!)"
    statement = re.compile(p["statement"].replace("{verbs}", alternation), re.I)
    named = None
    if p.get("named_subjects"):
        forms = "|".join(re.escape(v).replace(r"\ ", " ") for v in _verb_forms(p.get("verbs", []))) or "(?!)"
        named = re.compile(rf"(?:(?:just|recently|finally|also|really|still|now|never|always) )?(?:{forms})\b", re.I)
    exclude = re.compile(p["exclude"], re.I) if p.get("exclude") else None
    slots = tuple((re.compile(s["pattern"], re.I), str(s["slot"])) for s in p.get("slots", []))
    return _StatementRules(re.compile(p.get("first_person", FIRST_PERSON)), statement, named, exclude, slots)


def slot_of(sentence: str, slots: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """The single-valued attribute a sentence sets (e.g. `residence`, `name:cat`), if any."""
    for pattern, template in slots:
        m = pattern.search(sentence)
        if m:
            return template.format(*[g.lower().strip() for g in m.groups()])
    return None


class StatementsExecutor:
    """Facts or preferences a speaker states about themselves, or about a named person."""

    key = "offline:statements"

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult:
        p = card.parameters
        rules = _statement_rules(_json_key(p))
        kind = MemoryType(p.get("type", "semantic"))
        boost = float(p.get("importance_boost", 0.1))
        resolve_dates = bool(p.get("resolve_dates", False))
        ops: list[Operation] = []
        for span in spans:
            for sent in sentences(span.text):
                if not _statement_ok(sent, p):
                    continue
                subject = _subject(span, sent, rules.first_person, rules.named)
                if subject is None:
                    continue
                # A named subject's sentence is read as if that person said it in the first person
                # (the named pattern has already matched one of the card's verbs).
                probe = sent if subject.first_person else "I " + sent.split(" ", 1 + subject.name.count(" "))[-1]
                if rules.exclude is not None and rules.exclude.search(probe):
                    continue
                if subject.first_person and not rules.statement.search(sent):
                    continue
                text, when = sent, None
                if resolve_dates:  # "last week" read later means nothing: state the date it meant
                    mentions = past_mentions(sent, span)
                    for m in mentions[:2]:
                        text = annotate(text, m)
                    when = mentions[0].start if mentions else None
                slot = slot_of(probe, rules.slots)
                ops.append(Operation(
                    OpKind.INSERT, card.id, (span.message_id,), kind, _rewrite(text, subject),
                    slot=slot_key(subject.key, slot) if slot else None, importance_boost=boost, event_time=when,
                ))
        return SkillResult(ops)


# -- events: what happened when, dated from the message time ----------------------------------------


def past_mentions(sentence: str, span: Span) -> list[TimeMention]:
    """The sentence's time expressions that point to the past or to the message's own day."""
    today = span.timestamp.replace(hour=0, minute=0, second=0, microsecond=0)
    return [m for m in time_mentions(sentence, span.timestamp) if m.start <= today]


def annotate(sentence: str, mention: TimeMention) -> str:
    """The sentence with the resolved date after a relative expression ("yesterday (on 7 May 2023)")."""
    if str(mention.start.year) in mention.text:
        return sentence
    i = sentence.find(mention.text)
    if i < 0:
        return f"{sentence} ({mention.phrase})"
    j = i + len(mention.text)
    return f"{sentence[:j]} ({mention.phrase}){sentence[j:]}"


@lru_cache(maxsize=64)
def _compiled(key: str, name: str, default: str) -> re.Pattern[str]:
    p = json.loads(key)
    return re.compile(p.get(name, default), re.I)


def _dated(card: SkillCard, spans: Sequence[Span], *, future: bool) -> list[Operation]:
    p = card.parameters
    key = _json_key(p)
    subject_re = _compiled(key, "subject", r"\b(I|I'm|I've|I'd|I'll|my|me|we|we're|we've|our|us)\b")
    require = _compiled(key, "require", r".") if p.get("require") else None
    first_person = _compiled(key, "first_person", FIRST_PERSON)
    boost = float(p.get("importance_boost", 0.1))
    kind = MemoryType(p.get("type", "semantic"))
    ops: list[Operation] = []
    for span in spans:
        today = span.timestamp.replace(hour=0, minute=0, second=0, microsecond=0)
        for sent in sentences(span.text):
            if not _statement_ok(sent, p) or not subject_re.search(sent):
                continue
            if require is not None and not require.search(sent):
                continue
            if future:
                mentions = [m for m in time_mentions(sent, span.timestamp, prefer_future=True) if m.start >= today]
            else:
                mentions = past_mentions(sent, span)
            if not mentions and (not future or p.get("require_time", True)):
                continue
            text = sent
            for m in mentions[:2]:
                text = annotate(text, m)
            if first_person.search(sent):
                content = as_sentence(to_third_person(text, span.speaker))
            else:
                content = as_sentence(f"{span.speaker}: {text}")
            ops.append(Operation(
                OpKind.INSERT, card.id, (span.message_id,), kind, content,
                event_time=mentions[0].start if mentions else None, importance_boost=boost,
            ))
    return ops


class EventsExecutor:
    """Things that happened, with the date resolved from the message time."""

    key = "offline:events"

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult:
        return SkillResult(_dated(card, spans, future=False))


class PlansExecutor:
    """Plans and intentions (what someone means to do, and when)."""

    key = "offline:plans"

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult:
        return SkillResult(_dated(card, spans, future=True))


# -- relationships between people ---------------------------------------------------------------------


@lru_cache(maxsize=64)
def _relation_rules(key: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], frozenset[str]]:
    p = json.loads(key)
    rels = "|".join(sorted((re.escape(r).replace(r"\ ", " ") for r in p.get("relations", [])), key=lambda s: (-len(s), s)))
    rels = rels or "(?!)"
    named_after = re.compile(rf"\b[Mm]y (?P<rel>{rels})(?:,)? (?P<name>[A-Z][a-z]+)\b")
    named_before = re.compile(rf"\b(?P<name>[A-Z][a-z]+) is my (?P<rel>{rels})\b")
    # Without a name, only a sentence about the relation itself ("My kids love the beach"), not
    # one that mentions it in passing (that sentence is another skill's).
    mention = re.compile(rf"^(?:(?:and|but|so|well|oh),? )?my (?P<rel>{rels})\b", re.I)
    return named_after, named_before, mention, frozenset(r.lower() for r in p.get("single", []))


class RelationsExecutor:
    """Who is who to the speaker: "my sister Anna" -> "Anna is Caroline's sister."."""

    key = "offline:relations"

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult:
        p = card.parameters
        after, before, mention, single = _relation_rules(_json_key(p))
        boost = float(p.get("importance_boost", 0.1))
        kind = MemoryType(p.get("type", "semantic"))
        ops: list[Operation] = []
        for span in spans:
            for sent in sentences(span.text):
                if not _statement_ok(sent, p):
                    continue
                found = [m for m in (*after.finditer(sent), *before.finditer(sent))
                         if m.group("name").lower() not in _NOT_NAMES]
                for m in found:
                    rel = m.group("rel").lower()
                    slot = slot_key(span.subject_key, rel) if rel in single else None
                    ops.append(Operation(OpKind.INSERT, card.id, (span.message_id,), kind,
                                         f"{m.group('name')} is {span.speaker}'s {rel}.", slot=slot, importance_boost=boost))
                if not found and mention.match(sent):
                    ops.append(Operation(OpKind.INSERT, card.id, (span.message_id,), kind,
                                         as_sentence(to_third_person(sent, span.speaker)), importance_boost=boost))
        return SkillResult(ops)
