"""The learned skill controller: scores every (span, skill) pair the cards allow and keeps, per
span, at most `top_k` skills whose probability reaches the artefact's threshold.

The threshold was chosen at training time (`memsvc train skills`) so that the policy spends what
the fixed heuristic spends; the manifest carries the cross-validated recall and cost of both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memsvc.learn.artefact import Manifest
from memsvc.learn.features import write_features
from memsvc.learn.skills import SkillPolicyHead, predict_policy
from memsvc.skills.cards import SkillCard
from memsvc.skills.controller import candidates, triggered
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
        picks = []
        for scored in self.scores(spans, embeddings, cards):
            best = sorted((x for x in scored if x[1] >= self.threshold), key=lambda x: -x[1])[: self.top_k]
            picks.append(sorted(skill for skill, _ in best))
        return picks

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"kind": "learned", "name": m.name, "version": m.version, "created": m.created.isoformat(),
                "top_k": self.top_k, "threshold": self.threshold, "data": m.data, "metrics": m.metrics,
                "command": m.command}
