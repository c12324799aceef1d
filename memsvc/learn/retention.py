"""The retention model: beta per memory from `memsvc.lifecycle.retention.FEATURES`, trained pairwise.

beta = exp(-e^-z) with z from the head, so the retention score r(t) = beta^(age + 1) orders memories
exactly as u = z - log(age + 1) does (`memsvc.lifecycle.retention.decay_scores`); training works on u.

A training example is a *snapshot*: the active memories a sweep must choose among at one point of a
replayed conversation, with the features known then, each memory's age, and its survival value (the
share of later questions' evidence it holds: sum over the questions it is evidence for of
1 / |evidence|, what it adds to evidence recall if it is still active when they are asked). The loss
is pairwise (RankNet) within a snapshot: every memory with survival value should outrank every
memory without, weighted by its value, which is the decision a sweep makes at the budget's edge
(which to keep, not which is best).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from memsvc.learn.artefact import Manifest, read_manifest, write_manifest
from memsvc.learn.nets import RetentionHead
from memsvc.lifecycle.retention import FEATURES

NAME = "memsvc-retention"
VERSION = "1"
PACKAGED = Path(__file__).resolve().parent / "artefacts" / "retention"
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Snapshot:
    features: np.ndarray  # (n, len(FEATURES)) as of the snapshot
    age: np.ndarray  # (n,) writes since each memory
    value: np.ndarray  # (n,) survival value (>= 0)
    weight: float = 1.0


def _pad(snaps: Sequence[Snapshot]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s.age) for s in snaps)
    f = snaps[0].features.shape[1]
    x = np.zeros((len(snaps), width, f), dtype=np.float32)
    age = np.zeros((len(snaps), width), dtype=np.float32)
    y = np.zeros((len(snaps), width), dtype=np.float32)
    mask = np.zeros((len(snaps), width), dtype=bool)
    for i, s in enumerate(snaps):
        n = len(s.age)
        x[i, :n], age[i, :n], y[i, :n], mask[i, :n] = s.features, s.age, s.value, True
    return torch.from_numpy(x), torch.from_numpy(age), torch.from_numpy(y), torch.from_numpy(mask)


def fit_retention(
    snaps: Sequence[Snapshot], *, hidden: int = 32, steps: int = 300, lr: float = 3e-3, weight_decay: float = 1e-3,
    seed: int = 0, batch: int = 16, progress: Progress | None = None,
) -> RetentionHead:
    """Value-weighted pairwise logistic loss on u = z - log(age + 1), valued versus unvalued memories."""
    torch.manual_seed(seed)
    train = [s for s in snaps if (s.value > 0).any() and (s.value <= 0).any()]
    x, age, y, mask = _pad(train)
    model = RetentionHead(x.shape[-1], hidden=hidden)
    model.norm.fit(x[mask])
    w = torch.tensor([s.weight for s in train], dtype=torch.float32)
    w = w / w.mean()
    pos = (y > 0) & mask
    neg = (y <= 0) & mask
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(train), generator=gen)[: min(batch, len(train))]
        u = model(x[idx]) - torch.log1p(age[idx])
        diff = u[:, :, None] - u[:, None, :]  # (b, i, j): i should outrank j
        pair = (y[idx][:, :, None] * neg[idx][:, None, :].float()) * pos[idx][:, :, None].float()
        per = (F.softplus(-diff) * pair).sum((1, 2)) / pair.sum((1, 2)).clamp_min(1e-9)
        loss = (w[idx] * per).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    model.eval()
    return model


def predict_z(model: RetentionHead, features: np.ndarray) -> np.ndarray:
    """z per row: beta = exp(-e^-z)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.float64)
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).double().numpy()
    return out


def save(folder: Path, model: RetentionHead, manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"retention": model.state_dict()}, folder / manifest.weights)
    write_manifest(folder, manifest)


def head_spec(hidden: int) -> dict[str, Any]:
    return {"features": list(FEATURES), "hidden": hidden}


def load(folder: Path) -> tuple[Manifest, RetentionHead]:
    """The manifest and the head; one trained on other features than this code computes raises
    ValueError (it must not be loaded)."""
    manifest = read_manifest(folder)
    spec: dict[str, Any] = manifest.heads["retention"]
    if spec.get("features") != list(FEATURES):
        raise ValueError(f"{folder}: the retention model was trained on other features than this code computes")
    model = RetentionHead(len(FEATURES), hidden=int(spec.get("hidden", 32)))
    model.load_state_dict(torch.load(folder / manifest.weights, map_location="cpu", weights_only=True)["retention"])
    model.eval()
    return manifest, model
