"""Fine-tuning the read gate on a tenant's own `POST /v1/feedback` events.

Each feedback event (a query and the memories that helped) becomes a labelled candidate list by
asking the read path for that query's candidates again. The most recent `holdout` share of the
events is held back; the fine-tuned reranker replaces the loaded one only when it ranks the
held-back events' helpful memories higher (mean reciprocal rank of the first helpful memory), in
the order the read path serves: expected evidence per token (`per_token_order`), ties in fused order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsvc.learn.features import per_token_order
from memsvc.learn.nets import RerankHead
from memsvc.learn.train import ListGroup, fit_reranker, score_lists
from memsvc.ports import RecordStore
from memsvc.read import ReadPipeline
from memsvc.schemas import SearchRequest


@dataclass
class FeedbackTuning:
    events: int
    usable: int
    train: int
    held_back: int
    base: dict[str, float] = field(default_factory=dict)
    tuned: dict[str, float] = field(default_factory=dict)
    kept: str = "base"  # "base" or "tuned"
    model: RerankHead | None = None

    def report(self) -> dict[str, Any]:
        return {"events": self.events, "usable": self.usable, "train": self.train, "held_back": self.held_back,
                "base": self.base, "tuned": self.tuned, "kept": self.kept}


def feedback_groups(records: RecordStore, reader: ReadPipeline, tenant: str, preset: str) -> tuple[int, list[ListGroup]]:
    """(events read, one labelled candidate list per usable event, oldest first)."""
    events = []
    cursor = None
    while True:
        page = records.events(tenant, kinds=["feedback"], limit=500, cursor=cursor)
        events += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    events.sort(key=lambda e: (e.created_at, e.id or 0))
    groups = []
    for ev in events:
        body = ev.payload
        if body.get("helpful") is False or not body.get("used_memory_ids"):
            continue
        req = SearchRequest(user_id=body["user_id"], query=body["query"], top_k=10, preset=preset)
        cset = reader.candidates(tenant, req, features=True)
        if cset is None or cset.features is None:
            continue
        used = set(body["used_memory_ids"])
        labels = np.array([c.cube.id in used for c in cset.candidates], dtype=np.float32)
        if labels.any():
            lengths = np.array([c.tokens for c in cset.candidates], dtype=np.float32)
            groups.append(ListGroup(cset.features, labels, lengths=lengths))
    return len(events), groups


def ranking_quality(model: RerankHead, groups: list[ListGroup]) -> dict[str, float]:
    """MRR of the first helpful memory and the share of helpful memories in the top 10, in the read
    path's order (per token where the group knows its candidates' lengths; ties in fused order)."""
    rr, r10 = [], []
    for g, s in zip(groups, score_lists(model, [g.features for g in groups]), strict=True):
        order = per_token_order(s, g.lengths) if g.lengths is not None else np.argsort(-s, kind="stable")
        hits = g.labels[order].astype(bool)
        rr.append(1.0 / (1 + int(np.argmax(hits))))
        r10.append(float(hits[:10].sum() / hits.sum()))
    return {"mrr": round(float(np.mean(rr)), 4), "recall@10": round(float(np.mean(r10)), 4)}


def tune_on_feedback(base: RerankHead, groups: list[ListGroup], events: int, *, holdout: float = 0.2,
                     steps: int = 200, lr: float = 1e-3, min_groups: int = 10) -> FeedbackTuning:
    n_held = max(1, int(round(len(groups) * holdout))) if groups else 0
    train, held = groups[: len(groups) - n_held], groups[len(groups) - n_held:]
    out = FeedbackTuning(events=events, usable=len(groups), train=len(train), held_back=len(held))
    if len(train) < min_groups or not held:
        return out
    tuned = fit_reranker(train, steps=steps, lr=lr, init=base)
    out.base, out.tuned = ranking_quality(base, held), ranking_quality(tuned, held)
    if out.tuned["mrr"] > out.base["mrr"]:
        out.kept, out.model = "tuned", tuned
    return out
