"""Segmentation and the heuristic write gate (a learned gate model replaces it later)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from memsvc.models import Role
from memsvc.write.extract import is_phatic

EPISODE_GAP = timedelta(minutes=30)
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


def segment(
    times: Sequence[datetime | None], sessions: Sequence[str | None], gap: timedelta = EPISODE_GAP
) -> list[int]:
    """Episode number of each message: a new episode at a session change or a time gap."""
    episodes: list[int] = []
    current = 0
    for i, (when, session) in enumerate(zip(times, sessions, strict=True)):
        if i > 0:
            prev_when, prev_session = times[i - 1], sessions[i - 1]
            if session != prev_session or (
                when is not None and prev_when is not None and when - prev_when > gap
            ):
                current += 1
        episodes.append(current)
    return episodes
