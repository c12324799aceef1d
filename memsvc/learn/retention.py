"""The retention model: beta per memory from `memsvc.lifecycle.retention.FEATURES`, trained listwise.

A training example is a *snapshot*: the memories of one conversation written up to a point of its
stream, with the features a sweep would compute then, each memory's age, and its survival value
(the share of later questions' evidence it holds: sum over the questions it is evidence for of
1 / |evidence|, which is what it adds to evidence recall if it is still active when they are
asked). The loss is the listwise softmax cross-entropy of the decayed scores
log r = (age + 1) * log(beta) against the survival values, so beta is judged by where it puts the
memory among those it competes with for the budget at that point, not by a label alone: an
evidence turn must outrank the newer chatter that would otherwise push it out.
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
    seed: int = 0, batch: int = 64, progress: Progress | None = None,
) -> RetentionHead:
    """Listwise softmax cross-entropy of (age + 1) * log sigmoid(z) against the survival values."""
    torch.manual_seed(seed)
    train = [s for s in snaps if s.value.sum() > 0]
    x, age, y, mask = _pad(train)
    model = RetentionHead(x.shape[-1], hidden=hidden)
    model.norm.fit(x[mask])
    target = y / y.sum(1, keepdim=True)
    w = torch.tensor([s.weight for s in train], dtype=torch.float32)
    w = w / w.mean()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(train), generator=gen)[: min(batch, len(train))]
        scores = (age[idx] + 1.0) * F.logsigmoid(model(x[idx]))
        scores = scores.masked_fill(~mask[idx], -1e9)
        loss = -(w[idx] * (target[idx] * torch.log_softmax(scores, dim=1)).sum(1)).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    model.eval()
    return model


def predict_log_beta(model: RetentionHead, features: np.ndarray) -> np.ndarray:
    """log(beta) per row (< 0)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.float64)
    with torch.inference_mode():
        z = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        out: np.ndarray = F.logsigmoid(z).double().numpy()
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
