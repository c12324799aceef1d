"""The skill runtime: runs the cards' executors on spans and returns their operations.

Two phases, because the write gate scores a message from the embedding of its episodic turn:
`turns` runs the cards selected `always` (the episodic turn) on every message; `derive` asks the
controller which skills each gated span gets, runs each chosen skill's executor once on its spans,
and, when the request carries operations, the `explicit` cards (Memory-as-Action). Every memory the
write path makes comes out of here. The `episode` cards (the digest) run off the write path:
`episode` applies them to one stored episode, in the consolidation job (`memsvc.lifecycle`).

The run record says per span which skills were chosen and per skill what it wrote, what it
declined (NOOP with a reason) and what it cost; the write event log keeps it (the controller's
training signal).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsvc.ports import SkillController, SkillExecutor
from memsvc.skills.cards import SkillCard
from memsvc.skills.types import Operation, OpKind, SkillContext, Span, noop


@dataclass
class SkillStats:
    spans: int = 0
    operations: int = 0
    noops: list[dict[str, Any]] = field(default_factory=list)
    ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def as_log(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spans": self.spans, "operations": self.operations, "ms": round(self.ms, 3)}
        if self.noops:
            out["noops"] = self.noops
        if self.calls:
            out.update(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, llm_calls=self.calls)
        return out


@dataclass
class RuntimeRun:
    operations: list[Operation] = field(default_factory=list)
    selected: dict[str, list[str]] = field(default_factory=dict)  # message id -> skills chosen for it
    skills: dict[str, SkillStats] = field(default_factory=dict)

    @property
    def tokens(self) -> dict[str, int]:
        return {"prompt": sum(s.prompt_tokens for s in self.skills.values()),
                "completion": sum(s.completion_tokens for s in self.skills.values())}


class SkillRuntime:
    def __init__(self, cards: Sequence[SkillCard], executors: Sequence[SkillExecutor], controller: SkillController) -> None:
        self.executors = {e.key: e for e in executors}
        self.controller = controller
        self.cards: list[SkillCard] = []
        self.load(cards)

    def load(self, cards: Sequence[SkillCard]) -> None:
        """Replace the bank (the designer keeps a refined card; a deployment reloads its folder)."""
        self.cards = list(cards)
        self._by_id = {c.id: c for c in self.cards}

    def active(self, card: SkillCard) -> bool:
        """Whether the card's executor is available here (an `llm` card needs a configured LLM)."""
        return card.executor_key in self.executors

    def inactive_reason(self, card: SkillCard) -> str | None:
        if self.active(card):
            return None
        if card.executor == "llm":
            return "no LLM configured (MEMSVC_LLM__KIND)"
        return f"no executor {card.executor_key!r} is installed"

    def card(self, skill_id: str) -> SkillCard | None:
        return self._by_id.get(skill_id)

    def selectable(self) -> list[SkillCard]:
        return [c for c in self.cards if c.selection == "controller" and self.active(c)]

    def turns(self, spans: Sequence[Span], run: RuntimeRun, context: SkillContext | None = None) -> None:
        """The `always` cards on every span."""
        ctx = context or SkillContext(spans=spans)
        for card in self.cards:
            if card.selection == "always" and self.active(card):
                self._apply(card, [s for s in spans if s.role.value in card.roles], ctx, run)

    def derive(
        self, spans: Sequence[Span], embeddings: np.ndarray, eligible: Sequence[bool], run: RuntimeRun,
        context: SkillContext, *, only: Sequence[str] | None = None,
    ) -> None:
        """The controller's choice per eligible span, and the explicit cards.

        `only` restricts the bank to these skill ids (ablations, the controller's training runs)."""
        pool = [c for c in self.selectable() if only is None or c.id in only]
        gated = [i for i, ok in enumerate(eligible) if ok]
        chosen_by_skill: dict[str, list[Span]] = {}
        if gated and pool:
            picks = self.controller.select([spans[i] for i in gated], embeddings[gated], pool)
            for i, skills in zip(gated, picks, strict=True):
                run.selected[spans[i].message_id] = list(skills)
                for skill in skills:
                    chosen_by_skill.setdefault(skill, []).append(spans[i])
        for card in pool:
            if card.id in chosen_by_skill:
                self._apply(card, chosen_by_skill[card.id], context, run)
        if context.explicit:
            for card in self.cards:
                if card.selection == "explicit" and self.active(card):
                    self._apply(card, [], context, run)

    def episode(self, spans: Sequence[Span], run: RuntimeRun, context: SkillContext | None = None) -> None:
        """The `episode` cards on the turns of one episode (the consolidation job's digest)."""
        ctx = context or SkillContext(spans=spans)
        for card in self.cards:
            if card.selection == "episode" and self.active(card):
                self._apply(card, [s for s in spans if s.role.value in card.roles], ctx, run)

    def _apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext, run: RuntimeRun) -> None:
        if not spans and card.selection != "explicit":
            return
        stats = run.skills.setdefault(card.id, SkillStats())
        stats.spans += len(spans)
        start = time.perf_counter()
        try:
            result = self.executors[card.executor_key].apply(card, spans, context)
        finally:
            stats.ms += (time.perf_counter() - start) * 1000
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.calls += result.calls
        allowed = {o.upper() for o in card.operations}
        for op in result.operations:
            if op.op.value not in allowed and op.op is not OpKind.NOOP:
                op = noop(card.id, op.source_ids, f"{op.op.value} is not among the card's operations")
            if op.op is OpKind.NOOP:
                stats.noops.append({"source_ids": list(op.source_ids), "reason": op.reason})
                continue
            if op.type is not None and op.type.value not in card.target_types:
                stats.noops.append({"source_ids": list(op.source_ids), "reason": f"type {op.type.value} is not a target type"})
                continue
            stats.operations += 1
            run.operations.append(op)
