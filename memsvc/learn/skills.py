"""The skill controller's policy: a small torch head scoring (span, skill) pairs.

A span is the MiniLM embedding of its episodic turn (computed by the write path anyway) plus the
write gate's signals; a skill is the embedding of its card's Purpose and When-to-use text, so a
card the designer adds or rewrites is scored without retraining from scratch, plus whether the
card's own trigger matches. The head outputs the logit that running the skill on the span writes
a memory that brings a later question's evidence into the recall budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from memsvc.learn.artefact import Manifest, read_manifest, write_manifest
from memsvc.learn.features import WRITE_FEATURES
from memsvc.learn.nets import Standardise

NAME = "memsvc-skill-controller"
VERSION = "1"
PACKAGED = Path(__file__).resolve().parent / "artefacts" / "skills"
SIDE_FEATURES: tuple[str, ...] = (*WRITE_FEATURES, "trigger")
# How the controller uses the policy (`memsvc.skills.policy.LearnedController`): `prune` vetoes pairs
# the card triggers propose, `select` chooses among every pair a span's role allows.
MODES = ("prune", "select")
Progress = Callable[[int, int, float], None]


class SkillPolicyHead(nn.Module):
    def __init__(self, dim: int, n_side: int, hidden: int = 64) -> None:
        super().__init__()
        self.norm = Standardise(n_side)
        self.net = nn.Sequential(nn.Dropout(0.1), nn.Linear(3 * dim + n_side, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, span: torch.Tensor, skill: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([span, skill, span * skill, self.norm(side)], dim=-1)).squeeze(-1)
        return out


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def fit_policy(
    span: np.ndarray, skill: np.ndarray, side: np.ndarray, labels: np.ndarray, *, hidden: int = 64,
    steps: int = 400, lr: float = 3e-3, weight_decay: float = 1e-3, seed: int = 0, batch: int = 4096,
    progress: Progress | None = None,
) -> SkillPolicyHead:
    """Class-balanced logistic loss over (span, skill) pairs, minibatches, seeded."""
    torch.manual_seed(seed)
    s, k, x, y = _t(span), _t(skill), _t(side), torch.from_numpy(labels.astype(np.float32))
    model = SkillPolicyHead(s.shape[1], x.shape[1], hidden=hidden)
    model.norm.fit(x)
    pos = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / max(pos, 1.0)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:batch]
        loss = loss_fn(model(s[idx], k[idx], x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    model.eval()
    return model


def predict_policy(model: SkillPolicyHead, span: np.ndarray, skill: np.ndarray, side: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = torch.sigmoid(model(_t(span), _t(skill), _t(side))).numpy()
    return out


def save(folder: Path, model: SkillPolicyHead, manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"policy": model.state_dict()}, folder / manifest.weights)
    write_manifest(folder, manifest)


def load(folder: Path) -> tuple[Manifest, SkillPolicyHead]:
    """The manifest and the head; a head trained on other side features than this code computes
    raises ValueError (it must not be loaded)."""
    manifest = read_manifest(folder)
    spec: dict[str, Any] = manifest.heads["policy"]
    if spec.get("features") != list(SIDE_FEATURES):
        raise ValueError(f"{folder}: the policy was trained on other features than this code computes")
    if manifest.config.get("mode", "select") not in MODES:
        raise ValueError(f"{folder}: unknown controller mode {manifest.config.get('mode')!r} (known: {', '.join(MODES)})")
    model = SkillPolicyHead(int(spec["dim"]), len(SIDE_FEATURES), hidden=int(spec.get("hidden", 64)))
    model.load_state_dict(torch.load(folder / manifest.weights, map_location="cpu", weights_only=True)["policy"])
    model.eval()
    return manifest, model
