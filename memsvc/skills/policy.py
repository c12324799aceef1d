"""The learned skill controller: scores every (span, skill) pair the cards allow and keeps, per
span, at most `top_k` skills whose probability reaches the artefact's threshold.

Two modes, named by the artefact (`config.mode`): `prune` (the shipped one) offers the policy only
the pairs whose card trigger matches and keeps those it rates at or above the threshold, so the
triggers propose and the policy vetoes; `select` lets it choose among every skill the span's role
allows. A pruning policy judges only the skills its training data could measure (`config.judged`:
those with enough pairs that brought evidence into the budget); the others (procedures, tool
results and terminology never answer a question of the development conversations) run where their
trigger matches, since no evidence against them is not evidence that they are useless. Nor does it
veto a pair whose card declares a slot that the span fills (`controller.slotted`: a new residence,
employer or name closes the old one, and a vetoed one would leave the old value active).

The threshold was chosen at training time (`memsvc train skills`) on cross-validated probabilities;
the manifest carries the held-out recall and cost of the policy and of the triggers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memsvc.learn.artefact import Manifest
from memsvc.learn.features import write_features
from memsvc.learn.skills import MODES, SkillPolicyHead, predict_policy
from memsvc.skills.cards import SkillCard
from memsvc.skills.controller import candidates, slotted, triggered
from memsvc.skills.types import Span

Embed = Callable[[list[str]], np.ndarray]


def pair_side(card: SkillCard, span: Span) -> np.ndarray:
    """The side features of a (span, skill) pair: the write gate's signals and the card's trigger."""
    return np.concatenate([write_features(span.role.value, span.text), [1.0 if triggered(card, span) else 0.0]]).astype(
        np.float32)


class LearnedController:
    name = "learned"

    def __init__(self, model: SkillPolicyHead, manifest: Manifest, embed: Embed, *, top_k: int,
                 threshold: float | None = None) -> None:
        self.model = model
        self.manifest = manifest
        self._embed = embed
        self.top_k = top_k
        self.threshold = float(threshold if threshold is not None else manifest.config.get("threshold", 0.5))
        self.mode = str(manifest.config.get("mode", "select"))
        judged = manifest.config.get("judged")
        self.judged: frozenset[str] | None = None if judged is None else frozenset(str(x) for x in judged)
        if self.mode not in MODES:
            raise ValueError(f"unknown skill controller mode {self.mode!r} (known: {', '.join(MODES)})")
        self._card_vecs: dict[str, np.ndarray] = {}

    def card_vector(self, card: SkillCard) -> np.ndarray:
        """The card's text embedding, cached per text (a designer's change re-embeds it)."""
        key = hashlib.sha256(f"{card.id}\n{card.describe_text()}".encode()).hexdigest()
        if key not in self._card_vecs:
            self._card_vecs[key] = self._embed([card.describe_text()])[0].astype(np.float32)
        return self._card_vecs[key]

    def scores(self, spans: Sequence[Span], embeddings: np.ndarray, cards: Sequence[SkillCard]) -> list[list[tuple[str, float]]]:
        """Per span, (skill, probability) for every skill the cards allow it."""
        rows: list[tuple[int, SkillCard]] = [(i, c) for i, s in enumerate(spans) for c in candidates(s, cards)]
        out: list[list[tuple[str, float]]] = [[] for _ in spans]
        if not rows:
            return out
        span = np.stack([embeddings[i] for i, _ in rows]).astype(np.float32)
        skill = np.stack([self.card_vector(c) for _, c in rows])
        side = np.stack([pair_side(c, spans[i]) for i, c in rows])
        for (i, c), p in zip(rows, predict_policy(self.model, span, skill, side), strict=True):
            out[i].append((c.id, float(p)))
        return out

    def select(self, spans: Sequence[Span], embeddings: np.ndarray, cards: Sequence[SkillCard]) -> list[list[str]]:
        by_id = {c.id: c for c in cards}
        picks = []
        for span, scored in zip(spans, self.scores(spans, embeddings, cards), strict=True):
            offered = [x for x in scored if self.mode == "select" or triggered(by_id[x[0]], span)]
            free = [s for s, _ in offered if self.mode == "prune" and (not self.judges(s) or slotted(by_id[s], span))]
            best = sorted((x for x in offered if x[0] not in free and x[1] >= self.threshold), key=lambda x: -x[1])
            picks.append(sorted([*free, *(skill for skill, _ in best[: self.top_k])]))
        return picks

    def judges(self, skill: str) -> bool:
        """Whether the policy rates this skill (a pruning policy leaves the others to their trigger)."""
        return self.judged is None or skill in self.judged

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"kind": "learned", "name": m.name, "version": m.version, "created": m.created.isoformat(),
                "mode": self.mode, "judged": None if self.judged is None else sorted(self.judged), "top_k": self.top_k, "threshold": self.threshold, "data": m.data, "metrics": m.metrics,
                "command": m.command}
