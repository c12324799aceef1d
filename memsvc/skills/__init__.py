"""The skill bank and its runtime: cards (data files), executors that apply them, the controller
that chooses which skills run on each span, and the designer that refines the cards."""

from memsvc.skills.cards import SkillCard, load_skill_bank, parse_card
from memsvc.skills.types import Operation, OpKind, Span

__all__ = ["OpKind", "Operation", "SkillCard", "Span", "load_skill_bank", "parse_card"]
