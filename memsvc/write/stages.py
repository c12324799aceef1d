"""The heuristic write gate (the learned gate model replaces its score when loaded; segmentation:
`memsvc.lifecycle.episodes`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from memsvc.models import Role
from memsvc.write.extract import is_phatic

_HAS_NUMBER = re.compile(r"\d")
_FIRST_PERSON = re.compile(r"\b(I|my|me|I'm|I've)\b")


@dataclass(frozen=True)
class GateDecision:
    importance: float
    extract: bool  # the message reaches the skill controller


def heuristic_gate(role: Role, text: str) -> GateDecision:
    """How memorable a message is, from cheap signals: phatic, length, numbers, first person."""
    if is_phatic(text):
        return GateDecision(0.1, False)
    words = len(text.split())
    score = 0.3
    score += 0.1 if words >= 12 else 0.0
    score += 0.1 if _HAS_NUMBER.search(text) else 0.0
    score += 0.2 if role is Role.USER and _FIRST_PERSON.search(text) else 0.0
    score -= 0.1 if role in (Role.SYSTEM, Role.TOOL) else 0.0
    # Any role but the system prompt reaches the controller; each card says which roles it reads.
    return GateDecision(round(min(1.0, max(0.0, score)), 2), role is not Role.SYSTEM)
