"""The skill designer: mines hard cases and refines cards, keeping a change only when the
development score improves; every kept change bumps the card's version and is recorded in its
history.

It works on a design table (`DesignTable`, written by `memsvc train skills` from the development
conversations): every (span, skill) pair the bank can run with what it wrote, whether that memory
brought a question's evidence into the recall budget, and what it cost; and every question's fused
candidates with the evidence each states. So a card's selection can be rescored without rewriting:
the development score of the bank is the reward of the card triggers' selection,
WR@500 - lambda * (cost / cost of every skill), over the table's questions.

Hard cases: questions whose evidence was written but not recalled within the budget, and among
their evidence turns the ones no skill wrote a needed memory for; the refinable ones are pairs
whose memory was needed but whose card's trigger did not fire. Offline the designer proposes, per
card, a trigger extended by the words that best separate those spans from the spans the card
rightly skipped (recall), and the trigger without each of its alternatives (precision: an
alternative that fires only where the memories are never needed costs without recall); with an
LLM it also asks the model for the pattern. Each proposal is scored on the table; per round the
best one that beats the current score is kept.

Held out by conversation: with `holdout` > 0 and at least two scenes (conversations / corpora) in
the table, a share of the scenes is set aside (chosen by a hash of their names, so reruns agree);
proposals are mined and scored on the others only, and the best one is kept only if the held-out
scenes' score does not fall either. The report gives both scores before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memsvc.models import Role
from memsvc.ports import LLM
from memsvc.skills.cards import SkillCard, save_card
from memsvc.skills.controller import triggered
from memsvc.skills.types import Span

_WORD = re.compile(r"[A-Za-z][A-Za-z']{2,}")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_COMMON = frozenset(
    ["the", "and", "that", "this", "with", "have", "for", "you", "was", "are", "but", "not", "just", "what", "they", "them", "there", "then", "than", "when", "your", "about", "really", "like", "would", "could", "will", "can", "its", "it's", "i'm", "i've", "that's", "been", "were", "had", "has", "from"])


@dataclass
class DesignTable:
    """Pairs (span row, skill) with label and cost; spans' role and text; questions' candidates."""

    pair_skill: list[str]
    pair_span: list[int]
    pair_label: list[bool]
    pair_cost: list[float]
    pair_memories: list[list[str]]
    span_role: list[str]
    span_text: list[str]
    span_key: list[str]  # "<task>/<scene>|<message id>"
    queries: list[dict[str, Any]]  # group, gold, ids, credited, words, episodic, sources
    lam: float = 0.05
    budget: int = 500
    source: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(self.__dict__, fh)
        return path

    @classmethod
    def load(cls, path: Path) -> DesignTable:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return cls(**json.load(fh))


def scene_of(span_key: str) -> str:
    """`<task>/<scene>|<message id>` -> `<task>/<scene>` (a question's `group`)."""
    return span_key.split("|", 1)[0]


def subset(table: DesignTable, scenes: set[str]) -> DesignTable:
    """The table restricted to these scenes: their spans, their pairs, their questions."""
    rows = [i for i, key in enumerate(table.span_key) if scene_of(key) in scenes]
    new_row = {old: new for new, old in enumerate(rows)}
    pairs = [j for j, row in enumerate(table.pair_span) if row in new_row]
    return DesignTable(
        pair_skill=[table.pair_skill[j] for j in pairs], pair_span=[new_row[table.pair_span[j]] for j in pairs],
        pair_label=[table.pair_label[j] for j in pairs], pair_cost=[table.pair_cost[j] for j in pairs],
        pair_memories=[table.pair_memories[j] for j in pairs], span_role=[table.span_role[i] for i in rows],
        span_text=[table.span_text[i] for i in rows], span_key=[table.span_key[i] for i in rows],
        queries=[q for q in table.queries if q["group"] in scenes], lam=table.lam, budget=table.budget,
        source={**table.source, "scenes": sorted(scenes)},
    )


def split_by_scene(table: DesignTable, holdout: float) -> tuple[DesignTable, DesignTable] | None:
    """(design scenes, held-out scenes), `holdout` of the scenes held out (at least one, never all);
    None when the table has fewer than two scenes or `holdout` is 0."""
    scenes = sorted({scene_of(k) for k in table.span_key} | {q["group"] for q in table.queries})
    if holdout <= 0 or len(scenes) < 2:
        return None
    n_out = min(len(scenes) - 1, max(1, round(len(scenes) * holdout)))
    held = set(sorted(scenes, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n_out])
    return subset(table, set(scenes) - held), subset(table, held)


def budget_recall(q: dict[str, Any], keep: set[str], budget: int, top_k: int = 100) -> float:
    """Share of the question's evidence stated within `budget` words of the read path's packing when
    only the derived memories in `keep` exist (turns always; a derived memory whose sources are
    already chosen verbatim is skipped, as `memsvc.read.restated` does)."""
    gold = set(q["gold"])
    found: set[str] = set()
    turns: set[str] = set()
    used = chosen = 0
    for i, mid in enumerate(q["ids"]):
        if chosen >= top_k:
            break
        episodic = q["episodic"][i]
        if not episodic and (mid not in keep or (q["sources"][i] and all(s in turns for s in q["sources"][i]))):
            continue
        chosen += 1
        used += q["words"][i]
        if used > budget:  # as `evals.metrics.results_within_budget`: the walk stops at the first overflow
            break
        found |= gold & set(q["credited"][i])
        if episodic:
            turns.update(q["sources"][i])
    return len(found) / len(gold) if gold else 0.0


def selection_mask(table: DesignTable, cards: Sequence[SkillCard]) -> list[bool]:
    """Which pairs the card triggers select."""
    by_id = {c.id: c for c in cards}
    out = []
    for skill, row in zip(table.pair_skill, table.pair_span, strict=True):
        card = by_id.get(skill)
        span = Span("", Role(table.span_role[row]), table.span_text[row], _EPOCH)
        out.append(card is not None and triggered(card, span))
    return out


def score(table: DesignTable, cards: Sequence[SkillCard]) -> dict[str, float]:
    """The bank's development score: recall within the budget and cost of the triggers' selection."""
    mask = selection_mask(table, cards)
    keep = {m for sel, mems in zip(mask, table.pair_memories, strict=True) if sel for m in mems}
    recall = sum(budget_recall(q, keep, table.budget) for q in table.queries) / max(1, len(table.queries))
    total = sum(table.pair_cost) or 1.0
    share = sum(c for sel, c in zip(mask, table.pair_cost, strict=True) if sel) / total
    return {"WR": round(recall, 5), "cost_share": round(share, 5), "reward": round(recall - table.lam * share, 5)}


@dataclass
class HardCases:
    questions: int  # evidence written but not recalled within the budget
    uncovered_spans: int  # evidence turns of those questions no skill wrote a needed memory for
    missed_pairs: dict[str, list[int]]  # skill -> span rows whose needed memory the trigger skipped


def hard_cases(table: DesignTable, cards: Sequence[SkillCard]) -> HardCases:
    mask = selection_mask(table, cards)
    keep = {m for sel, mems in zip(mask, table.pair_memories, strict=True) if sel for m in mems}
    missed_q = [q for q in table.queries if budget_recall(q, keep, table.budget) < 1.0]
    needed = {f"{q['group']}|{g}" for q in missed_q for g in q["gold"]}
    wrote = {table.span_key[row] for row, mems in zip(table.pair_span, table.pair_memories, strict=True) if mems}
    missed: dict[str, list[int]] = {}
    for skill, row, label, sel in zip(table.pair_skill, table.pair_span, table.pair_label, mask, strict=True):
        if label and not sel:
            missed.setdefault(skill, []).append(row)
    return HardCases(len(missed_q), len(needed - wrote), missed)


def propose_words(hard: Sequence[str], rest: Sequence[str], n: int = 3, min_count: int = 3) -> list[str]:
    """Words most over-represented in `hard` against `rest` (smoothed log-odds), at least `min_count` times."""
    def counts(texts: Sequence[str]) -> Counter[str]:
        c: Counter[str] = Counter()
        for t in texts:
            c.update({w.lower() for w in _WORD.findall(t)} - _COMMON)
        return c

    h, r = counts(hard), counts(rest)
    nh, nr = max(1, len(hard)), max(1, len(rest))
    scored = [(math.log((h[w] + 0.5) / nh) - math.log((r[w] + 0.5) / nr), w) for w in h if h[w] >= min_count]
    return [w for s, w in sorted(scored, reverse=True)[:n] if s > 0]


def _split_top(pattern: str) -> list[str]:
    """The pattern's alternatives at nesting depth 0 (escapes and character classes respected)."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*parts, pattern[start:]]


_GROUP = re.compile(r"^(?P<pre>(?:\\b)?)\(\?:(?P<body>.*)\)(?P<post>(?:\\b)?)$", re.S)


def narrowed_triggers(trigger: str) -> list[tuple[str, str]]:
    """(trigger without one alternative, the alternative dropped), at the top level, or inside the
    single group that a whole trigger often is (`\b(?:a|b|c)\b`)."""
    top = _split_top(trigger)
    if len(top) > 1:
        return [("|".join(top[:i] + top[i + 1:]), alt) for i, alt in enumerate(top)]
    m = _GROUP.match(trigger)
    if not m:
        return []
    inner = _split_top(m.group("body"))
    if len(inner) < 2:
        return []
    return [(f"{m.group('pre')}(?:{'|'.join(inner[:i] + inner[i + 1:])}){m.group('post')}", alt)
            for i, alt in enumerate(inner)]


def extend_trigger(trigger: str | None, words: Sequence[str]) -> str:
    alternation = "|".join(re.escape(w) for w in words)
    extra = rf"\b(?:{alternation})\b"
    return extra if not trigger else f"{trigger}|{extra}"


def llm_trigger(llm: LLM, card: SkillCard, hard: Sequence[str]) -> tuple[str | None, int]:
    """Ask the model for a trigger pattern covering the hard spans; (pattern or None, tokens)."""
    examples = "\n".join(f"- {t[:300]}" for t in hard[:20])
    reply = llm.complete([
        {"role": "system", "content": "You refine when a memory-writing skill runs. Answer with JSON: "
                                      '{"trigger": "<a Python regular expression, case-insensitive>"}.'},
        {"role": "user", "content": f"Skill {card.id}.\nWhen to use:\n{card.sections.get('When to use', '')}\n"
                                    f"Current trigger: {card.parameters.get('trigger')}\nMessages where the skill "
                                    f"should have run but the trigger missed:\n{examples}\nPropose a trigger that also "
                                    "matches these without matching ordinary small talk."},
    ], max_tokens=200, json_mode=True)
    tokens = reply.prompt_tokens + reply.completion_tokens
    try:
        pattern = str(json.loads(reply.text)["trigger"])
        re.compile(pattern)
    except (ValueError, KeyError, TypeError, re.error):
        return None, tokens
    return pattern, tokens


def design(table: DesignTable, cards: list[SkillCard], *, bank_dir: Path | None = None, llm: LLM | None = None,
           max_changes: int = 3, min_gain: float = 0.0005, holdout: float = 0.3) -> dict[str, Any]:
    """Refine triggers greedily: per round, score one proposal per card with missed pairs and keep the
    best if it beats the current score by `min_gain` on the design scenes and does not lower the
    held-out scenes' score (see the module doc). Kept cards are written to `bank_dir` (version bump,
    history line) and replace their old version in `cards`."""
    split = split_by_scene(table, holdout)
    full = table
    held: DesignTable | None = None
    if split is not None:
        table, held = split
    base = score(table, cards)
    report: dict[str, Any] = {"score_before": base, "kept": [], "rejected": [], "llm_tokens": 0,
                              "scenes": {"design": len({q["group"] for q in table.queries}),
                                         "held_out": len({q["group"] for q in held.queries}) if held else 0}}
    held_current = score(held, cards) if held is not None else None
    report["held_out_before"] = held_current
    hard = hard_cases(table, cards)
    report["hard_cases"] = {"questions_not_recalled": hard.questions, "uncovered_evidence_spans": hard.uncovered_spans,
                            "missed_pairs": {k: len(v) for k, v in hard.missed_pairs.items()}}
    current = base
    for _ in range(max_changes):
        hard = hard_cases(table, cards)
        trials: list[tuple[dict[str, float], SkillCard, str, str]] = []
        # Precision: a trigger alternative that fires where the skill's memories are never needed
        # costs without recall; try each card without each alternative.
        for card in cards:
            trigger = card.parameters.get("trigger")
            if card.selection != "controller" or not trigger or card.id not in table.pair_skill:
                continue
            for pattern, dropped in narrowed_triggers(str(trigger)):
                trial = card.model_copy(deep=True)
                trial.parameters["trigger"] = pattern
                trial_cards = [trial if c.id == card.id else c for c in cards]
                trials.append((score(table, trial_cards), trial, f"trigger -= {dropped!r}", "offline"))
        # Recall: hard cases, pairs whose memory was needed but whose trigger did not fire.
        for skill, rows in sorted(hard.missed_pairs.items()):
            found = next((c for c in cards if c.id == skill), None)
            if found is None or found.selection != "controller":
                continue
            card = found
            hard_texts = [table.span_text[r] for r in rows]
            skipped = [table.span_text[r] for s, r, lab in zip(table.pair_skill, table.pair_span, table.pair_label, strict=True)
                       if s == skill and not lab]
            proposals: list[tuple[str, str]] = []
            words = propose_words(hard_texts, skipped)
            if words:
                proposals.append((extend_trigger(card.parameters.get("trigger"), words), f"trigger += {words}"))
            if llm is not None:
                proposed, tokens = llm_trigger(llm, card, hard_texts)
                report["llm_tokens"] += tokens
                if proposed:
                    proposals.append((proposed, "trigger proposed by the LLM"))
            for trigger, change in proposals:
                trial = card.model_copy(deep=True)
                trial.parameters["trigger"] = trigger
                trial_cards = [trial if c.id == skill else c for c in cards]
                trials.append((score(table, trial_cards), trial, change, "llm" if "LLM" in change else "offline"))
        if not trials:
            break
        trials.sort(key=lambda t: -t[0]["reward"])
        report["trials"] = report.get("trials", 0) + len(trials)
        # The best proposal that gains on the design scenes and holds on the held-out ones.
        chosen: tuple[dict[str, float], SkillCard, str, str] | None = None
        held_after: dict[str, float] | None = None
        for s, card, change, by in trials:
            if s["reward"] < current["reward"] + min_gain:
                report["rejected"].append({"skill": card.id, "change": change, "score": s, "by": by})
                break
            if held is not None and held_current is not None:
                held_after = score(held, [card if c.id == card.id else c for c in cards])
                if held_after["reward"] < held_current["reward"]:
                    report["rejected"].append({"skill": card.id, "change": change, "score": s, "by": by,
                                               "held_out": held_after, "why": "the held-out scenes' score fell"})
                    continue
            chosen = (s, card, change, by)
            break
        if chosen is None:
            break
        s, card, change, by = chosen
        old = next(c for c in cards if c.id == card.id)
        card.version = old.version + 1
        entry = {"version": card.version, "date": datetime.now(UTC).date().isoformat(), "change": change,
                 "kind": "trigger", "by": by, "score_before": current["reward"], "score_after": s["reward"],
                 "detail": {"before": current, "after": s, "table": full.source}}
        if held_after is not None and held_current is not None:
            entry["held_out_before"], entry["held_out_after"] = held_current["reward"], held_after["reward"]
            held_current = held_after
        if bank_dir is not None:
            save_card(bank_dir, card, entry)
        else:
            card.history.append(entry)
        cards[cards.index(old)] = card
        report["kept"].append({"skill": card.id, **entry})
        current = s
    report["score_after"] = current
    report["held_out_after"] = held_current
    return report
