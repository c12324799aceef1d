"""What skills read (spans) and return (operations): plain values, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from memsvc.models import MemoryCube, MemoryType, Role


class OpKind(StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


@dataclass(frozen=True)
class Span:
    """One message as the skills see it (the unit the controller selects skills for)."""

    message_id: str
    role: Role
    text: str
    timestamp: datetime
    name: str | None = None  # the message's `name` (a named speaker, a tool)
    episode: int = 0
    index: int = 0  # position in the request
    turn: int = 0  # position in the user scope's stream of turns (stable across requests)
    importance: float = 0.5  # the write gate's score

    @property
    def speaker(self) -> str:
        """Who "I" is, as derived memories name them: the name, "User" for the scope's own unnamed
        user, else the role."""
        if self.name:
            return self.name
        return "User" if self.role is Role.USER else self.role.value

    @property
    def subject_key(self) -> str | None:
        """Slot prefix of the speaker's own facts; None for the scope's own unnamed user, whose facts
        keep the plain slot names they had before slots were keyed by subject."""
        if self.name:
            return self.name.strip().lower()
        return None if self.role is Role.USER else self.role.value


@dataclass(frozen=True)
class Operation:
    """One change a skill asks for. INSERT carries the new memory; UPDATE and DELETE name an existing
    memory (`target_id`); NOOP says why nothing was written (never silent). `source_ids` are the
    message ids the memory restates."""

    op: OpKind
    skill: str
    source_ids: tuple[str, ...] = ()
    type: MemoryType | None = None
    content: str = ""
    slot: str | None = None
    target_id: str | None = None
    reason: str = ""
    event_time: datetime | None = None
    importance: float | None = None  # absolute; None: the gate's score plus `importance_boost`
    importance_boost: float = 0.0
    importance_floor: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def slot_key(subject: str | None, attribute: str) -> str:
    """A single-valued slot keyed by whose attribute it is (`melanie/residence`); the scope's own
    unnamed user keeps the bare attribute."""
    return attribute if subject is None else f"{subject}/{attribute}"


def noop(skill: str, span_ids: tuple[str, ...], reason: str) -> Operation:
    return Operation(OpKind.NOOP, skill, source_ids=span_ids, reason=reason)


@dataclass(frozen=True)
class ExplicitOperation:
    """An operation an agent sent with its request (Memory-as-Action)."""

    op: OpKind
    reason: str
    type: MemoryType | None = None
    content: str | None = None
    memory_id: str | None = None
    source_ids: tuple[str, ...] = ()
    importance: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkillContext:
    """What an executor may read besides its spans: the whole request (a step list's question is
    the turn before it), the memories already stored near a span (what an LLM executor updates),
    and the operations an agent sent."""

    spans: Sequence[Span] = ()
    existing: Callable[[Span, int], list[MemoryCube]] | None = None
    explicit: Sequence[ExplicitOperation] = ()

    def previous(self, span: Span) -> Span | None:
        """The message before `span` in the same request and episode."""
        if span.index <= 0 or span.index > len(self.spans):
            return None
        prev = self.spans[span.index - 1]
        return prev if prev.episode == span.episode else None


@dataclass
class SkillResult:
    """An executor's answer: its operations and what it cost in LLM tokens (0 offline)."""

    operations: list[Operation]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
