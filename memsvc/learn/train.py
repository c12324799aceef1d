"""Training loops for the gate heads, and the pure metrics they are judged by.

Everything is full-batch on small padded tensors (a few thousand queries x a few hundred
candidates), seeded, on CPU: a head trains in seconds to a minute on two cores.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from memsvc.learn.nets import QueryAdapter, RerankHead, RouterHead, SecondProjection, WriteGateHead

Progress = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class ListGroup:
    """One query's candidates (rows of features) and which of them hold gold evidence."""

    features: np.ndarray  # (n, f)
    labels: np.ndarray  # (n,) 0/1
    weight: float = 1.0  # the query's share of the loss (e.g. 1 / queries of its task)
    lengths: np.ndarray | None = None  # (n,) tokens per candidate, where judged in the read path's per-token order


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties share their average rank)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def folds_by_group(groups: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """A fold per item such that all items of a group (a conversation, a corpus) share one fold.

    Groups are dealt round-robin in a seeded order within each task prefix (`task/scene`), so every
    fold holds scenes of every task that has at least k of them."""
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[str]] = {}
    for g in dict.fromkeys(groups):
        by_task.setdefault(g.split("/", 1)[0], []).append(g)
    fold_of: dict[str, int] = {}
    offset = 0
    for task in sorted(by_task):
        names = by_task[task]
        for i, idx in enumerate(rng.permutation(len(names))):
            fold_of[names[idx]] = (offset + i) % k
        offset += len(names)
    return [fold_of[g] for g in groups]


def _pad(groups: Sequence[ListGroup]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(g.labels) for g in groups)
    f = groups[0].features.shape[1]
    x = np.zeros((len(groups), width, f), dtype=np.float32)
    y = np.zeros((len(groups), width), dtype=np.float32)
    mask = np.zeros((len(groups), width), dtype=bool)
    for i, g in enumerate(groups):
        n = len(g.labels)
        x[i, :n], y[i, :n], mask[i, :n] = g.features, g.labels, True
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


RERANK_LOSSES = ("listnet", "lambda")


def lambda_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per query (rows of padded lists): a logistic loss on every (gold, other) pair of its candidates,
    weighted by how much swapping the two would move a rank discount 1 / log2(2 + rank) at the current
    ranks (LambdaRank's weighting, NDCG's discount), over the query's gold count (so every question
    weighs the same, as in a recall average). The pairs that straddle the top of the ranking carry
    the weight, not those already well ordered far down it."""
    with torch.no_grad():
        rank = logits.argsort(1, descending=True).argsort(1).to(logits.dtype)
        discount = 1.0 / torch.log2(2.0 + rank)
        gold = labels > 0
        pairs = gold.unsqueeze(2) & (~gold & mask).unsqueeze(1)  # (B, n, n): i gold, j not
        weight = (discount.unsqueeze(2) - discount.unsqueeze(1)).abs() * pairs
        weight = weight / gold.sum(1).clamp(min=1).view(-1, 1, 1).to(logits.dtype)
    margin = logits.unsqueeze(2) - logits.unsqueeze(1)  # s_i - s_j
    return (torch.nn.functional.softplus(-margin) * weight).sum((1, 2))


def fit_reranker(
    groups: Sequence[ListGroup], *, hidden: int = 64, steps: int = 400, lr: float = 3e-3,
    weight_decay: float = 1e-4, seed: int = 0, progress: Progress | None = None, init: RerankHead | None = None,
    loss: str = "listnet",
) -> RerankHead:
    """`loss` "listnet": listwise softmax cross-entropy, the target spread evenly over a query's gold
    candidates; "lambda": `lambda_loss`. Each query's loss times its `weight`.

    With `init`, a copy of that model is fine-tuned (its input statistics kept)."""
    if loss not in RERANK_LOSSES:
        raise ValueError(f"unknown reranker loss {loss!r} (one of {', '.join(RERANK_LOSSES)})")
    torch.manual_seed(seed)
    train = [g for g in groups if g.labels.any()]
    x, y, mask = _pad(train)
    if init is not None:
        model = copy.deepcopy(init)
    else:
        model = RerankHead(x.shape[-1], hidden=hidden)
        model.norm.fit(x[mask])
    target = y / y.sum(1, keepdim=True)
    w = torch.tensor([g.weight for g in train], dtype=torch.float32)
    w = w / w.mean()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batch = min(256, len(train))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(train), generator=gen)[:batch]
        logits = model(x[idx]).masked_fill(~mask[idx], -1e9)
        if loss == "lambda":
            value = (w[idx] * lambda_loss(logits, y[idx], mask[idx])).mean()
        else:
            value = -(w[idx] * (target[idx] * torch.log_softmax(logits, dim=1)).sum(1)).mean()
        opt.zero_grad()
        value.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(value))
    model.eval()
    return model


@dataclass(frozen=True)
class AdapterList:
    """One query for the query adapter: its embedding, its candidates (rows of a shared vector
    table) and which of them hold gold evidence."""

    query: np.ndarray  # (d,)
    rows: np.ndarray  # (n,) indices into the table of candidate vectors
    labels: np.ndarray  # (n,) 0/1


def fit_adapter(
    lists: Sequence[AdapterList], table: np.ndarray, *, steps: int = 300, batch: int = 256, lr: float = 3e-3,
    penalty: float = 0.03, temperature: float = 0.05, seed: int = 0,
) -> QueryAdapter:
    """The query adapter: listwise softmax cross-entropy over each query's candidates by cosine to
    the moved query (target spread over its gold), plus `penalty` * ||A||^2 (A stays near zero,
    i.e. near the plain query, where the data does not say otherwise)."""
    torch.manual_seed(seed)
    train = [x for x in lists if x.labels.any()]
    model = QueryAdapter(table.shape[1])
    if not train:
        return model.eval()
    width = max(len(x.rows) for x in train)
    rows = np.zeros((len(train), width), dtype=np.int64)
    y = np.zeros((len(train), width), dtype=np.float32)
    mask = np.zeros((len(train), width), dtype=bool)
    for i, x in enumerate(train):
        n = len(x.rows)
        rows[i, :n], y[i, :n], mask[i, :n] = x.rows, x.labels, True
    q = torch.from_numpy(np.stack([x.query for x in train]).astype(np.float32))
    vecs = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))
    rows_t, mask_t = torch.from_numpy(rows), torch.from_numpy(mask)
    target = torch.from_numpy(y / y.sum(1, keepdims=True))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(train), generator=gen)[:batch]
        moved = model(q[idx])  # (b, d)
        cos = torch.einsum("bd,bnd->bn", moved, vecs[rows_t[idx]])
        logits = (cos / temperature).masked_fill(~mask_t[idx], -1e9)
        loss = -(target[idx] * torch.log_softmax(logits, dim=1)).sum(1).mean() + penalty * (model.a ** 2).sum()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model.eval()


def fit_projection(x: np.ndarray, y: np.ndarray, *, ridge: float = 1.0) -> SecondProjection:
    """The second embedder's space from the packaged MiniLM's: W = argmin ||XW - Y||^2 + ridge ||W||^2
    over rows that both embed (closed form, float64), as a `SecondProjection` (unit-length outputs)."""
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.linalg.solve(x64.T @ x64 + ridge * np.eye(x64.shape[1]), x64.T @ y64)
    model = SecondProjection(x64.shape[1], y64.shape[1])
    with torch.no_grad():
        model.w.copy_(torch.from_numpy(w.astype(np.float32)))
    return model.eval()


def project_queries(model: SecondProjection, queries: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))).numpy()
    return out


def adapt_queries(model: QueryAdapter, queries: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))).numpy()
    return out


def score_lists(model: RerankHead, lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        return [model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy() if len(x) else
                np.zeros(0, dtype=np.float32) for x in lists]


def fit_binary(
    emb: np.ndarray, side: np.ndarray, labels: np.ndarray, *, hidden: int = 32, steps: int = 300,
    lr: float = 3e-3, weight_decay: float = 1e-3, seed: int = 0, progress: Progress | None = None,
    batch: int = 8192,
) -> WriteGateHead:
    """The write gate: class-balanced logistic loss over (embedding, side features), minibatches."""
    torch.manual_seed(seed)
    e = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    s = torch.from_numpy(np.ascontiguousarray(side, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.float32))
    model = WriteGateHead(e.shape[1], s.shape[1], hidden=hidden)
    model.norm.fit(s)
    pos = float(y.sum())
    weight = torch.tensor((len(y) - pos) / max(pos, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:batch]
        loss = loss_fn(model(e[idx], s[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    model.eval()
    return model


def predict_binary(model: WriteGateHead, emb: np.ndarray, side: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)),
                       torch.from_numpy(np.ascontiguousarray(side, dtype=np.float32)))
    out: np.ndarray = torch.sigmoid(logits).numpy()
    return out


def fit_router(
    emb: np.ndarray, side: np.ndarray, targets: np.ndarray, *, hidden: int = 32, steps: int = 300,
    lr: float = 3e-3, weight_decay: float = 1e-3, seed: int = 0,
) -> RouterHead:
    """Multi-label logistic loss: per retriever, did its own ranking hold the evidence high."""
    torch.manual_seed(seed)
    e = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    s = torch.from_numpy(np.ascontiguousarray(side, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    model = RouterHead(e.shape[1], s.shape[1], y.shape[1], hidden=hidden)
    model.norm.fit(s)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(steps):
        loss = loss_fn(model(e, s), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model
