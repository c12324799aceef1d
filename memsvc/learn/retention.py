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

One of those features is itself learned: `evidence`, the logit of a linear head over the memory's
embedding, signals and hashed words and the embeddings and signals of its stream neighbours, and
a second embedding of it and its neighbours (`memsvc.learn.second`; `context_inputs`), trained first with a class-balanced logistic loss on "is evidence for a later
question" (L2 as a logistic regression with C = `EVIDENCE_C`). For training the ranking head, every
conversation's evidence comes from a head that never saw it (cross-fitted, as the write gate's
importance is), so the ranking head learns how far to trust it on unseen conversations. Which head
orders a scope is the artefact's `ranker` (`RANKERS`).
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
from memsvc.learn.nets import EvidenceHead, RetentionHead
from memsvc.learn.second import NAME as SECOND_NAME
from memsvc.lifecycle.retention import (
    FEATURES,
    STRUCTURE,
    WORD_BUCKETS,
    ScopeStream,
    context_width,
    stream_features,
)

NAME = "memsvc-retention"
VERSION = "4"
RANKERS: tuple[str, ...] = ("head", "evidence")
"""What orders a scope's memories: `head`, the ranking head's beta from every feature; `evidence`, the
evidence head alone (z = evidence + log(age + 1), so the decayed score orders by evidence whatever
the age). `memsvc train retention` ships the one that keeps more recall in its cross-validation."""
EVIDENCE_C = 0.1  # inverse L2 strength of the evidence head, per example as in scikit-learn's LogisticRegression
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


def fit_evidence(inputs: np.ndarray, labels: np.ndarray, *, c: float = EVIDENCE_C, steps: int = 200) -> EvidenceHead:
    """The evidence head: class-balanced logistic loss plus |w|^2 / (2 c n), full batch (L-BFGS);
    deterministic for the same data."""
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    n, pos = len(y), float(y.sum())
    if pos == 0 or pos == n:
        raise ValueError("the evidence head needs both evidence and other memories to learn from")
    weight = torch.where(y > 0, n / (2.0 * pos), n / (2.0 * (n - pos)))
    model = EvidenceHead(x.shape[1])
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = model(x)
        loss = (weight * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()
        loss = loss + model.linear.weight.pow(2).sum() / (2.0 * c * n)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    model.eval()
    return model


def evidence_logit(head: EvidenceHead) -> Callable[[np.ndarray], np.ndarray]:
    def run(inputs: np.ndarray) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            out: np.ndarray = head(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()
        return out
    return run


@dataclass
class RetentionModel:
    """The shipped model: the evidence head feeds the `evidence` feature of the ranking head; `ranker`
    (one of `RANKERS`) says which of the two orders the memories."""

    head: RetentionHead
    evidence: EvidenceHead
    ranker: str = "head"
    second_dim: int = 0  # width of the second embedding the evidence head reads (0: none)

    def __post_init__(self) -> None:
        if self.ranker not in RANKERS:
            raise ValueError(f"unknown retention ranker {self.ranker!r} (expected one of {', '.join(RANKERS)})")

    def features(self, stream: ScopeStream) -> np.ndarray:
        width = 0 if stream.second is None else int(np.asarray(stream.second).shape[-1])
        if width != self.second_dim:
            raise ValueError(f"the evidence head reads a second embedding of {self.second_dim} columns, "
                             f"the stream has {width}")
        return stream_features(stream, evidence=evidence_logit(self.evidence))

    def __call__(self, stream: ScopeStream) -> np.ndarray:
        """z per memory of the stream (beta = exp(-e^-z)), as of the stream's end."""
        features = self.features(stream)
        if self.ranker == "evidence":
            # + log(age + 1): the decay cancels, the decayed score orders by the evidence logit
            age = len(stream) - 1 - np.arange(len(stream))
            return features[:, FEATURES.index("evidence")].astype(np.float64) + np.log1p(age.astype(np.float64))
        return predict_z(self.head, features)


def predict_z(model: RetentionHead, features: np.ndarray) -> np.ndarray:
    """z per row: beta = exp(-e^-z)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.float64)
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).double().numpy()
    return out


def save(folder: Path, model: RetentionModel, manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"retention": model.head.state_dict(), "evidence": model.evidence.state_dict()},
               folder / manifest.weights)
    write_manifest(folder, manifest)


def head_spec(hidden: int, dim: int, embedder: str, second: str | None = None, second_dim: int = 0) -> dict[str, Any]:
    return {"features": list(FEATURES), "hidden": hidden, "structure": list(STRUCTURE), "dim": dim, "embedder": embedder,
            "second_embedder": second, "second_dim": second_dim, "evidence_inputs": context_width(dim, second_dim),
            "word_buckets": WORD_BUCKETS, "evidence_c": EVIDENCE_C}


def load(folder: Path) -> tuple[Manifest, RetentionModel]:
    """The manifest and the model; one trained on other features than this code computes raises
    ValueError (it must not be loaded)."""
    manifest = read_manifest(folder)
    spec: dict[str, Any] = manifest.heads["retention"]
    if spec.get("features") != list(FEATURES) or spec.get("structure") != list(STRUCTURE):
        raise ValueError(f"{folder}: the retention model was trained on other features than this code computes")
    dim, second = int(spec["dim"]), int(spec.get("second_dim") or 0)
    if spec.get("evidence_inputs") != context_width(dim, second):
        raise ValueError(f"{folder}: the evidence head was trained on other inputs than this code computes")
    if second and spec.get("second_embedder") != SECOND_NAME:
        raise ValueError(f"{folder}: the evidence head reads {spec.get('second_embedder')} embeddings, "
                         f"this code computes {SECOND_NAME}")
    head = RetentionHead(len(FEATURES), hidden=int(spec.get("hidden", 32)))
    evidence = EvidenceHead(context_width(dim, second))
    state = torch.load(folder / manifest.weights, map_location="cpu", weights_only=True)
    head.load_state_dict(state["retention"])
    evidence.load_state_dict(state["evidence"])
    head.eval()
    evidence.eval()
    return manifest, RetentionModel(head, evidence, str(manifest.config.get("ranker", "head")), second)
