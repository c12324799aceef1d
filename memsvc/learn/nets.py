"""The gate model's heads: small torch modules over features the service already computes.

One family, three heads: all of them sit on the packaged MiniLM's vector space or on the read
path's own signals, so no head runs an encoder of its own (the encoder pass is shared with the
embedding the service computes anyway). Each head standardises its inputs with statistics fixed
at training time (buffers), so an artefact is self-contained.
"""

from __future__ import annotations

import torch
from torch import nn


class Standardise(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class RerankHead(nn.Module):
    """Read gate: a score per (query, candidate) from the candidate's retrieval features.

    It reads the first `n_features` columns of its rows: a head trained before columns were appended
    to `RERANK_FEATURES` keeps reading the ones it was trained on (`features.compatible`)."""

    def __init__(self, n_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_features = n_features
        self.norm = Standardise(n_features)
        self.linear = nn.Linear(n_features, 1)
        self.mlp = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x[..., :self.n_features])
        out: torch.Tensor = (self.linear(z) + self.mlp(z)).squeeze(-1)
        return out


class QueryAdapter(nn.Module):
    """Read gate's query side: the query embedding moved to where its evidence sits, q' = unit(q + qA).

    The memories keep the vectors the index holds (the packaged MiniLM's); only the query moves,
    so an adapter can be trained, shipped and replaced without re-embedding a store. Questions and
    the statements that answer them sit apart in MiniLM's space ("When did Caroline go to the
    support group?" vs "I went to a LGBTQ support group yesterday"); A is zero at the start (the
    plain query) and its L2 penalty keeps it near there."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(dim, dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        moved = q + q @ self.a
        out: torch.Tensor = moved / moved.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return out


class SecondProjection(nn.Module):
    """Read gate's query in the second embedder's space without running it: q_e5 ~ unit(q W), a
    linear map from the packaged MiniLM's query embedding to multilingual-e5-small's, fitted by ridge
    regression on texts that both embed (`memsvc.learn.train.fit_projection`). The candidates keep
    their real e5 rows (stored with the scope); only the query is projected, which spares a search
    the e5 encoder pass (~18 ms on 2 cores) that would otherwise be its largest cost."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, out_dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        moved = q @ self.w
        out: torch.Tensor = moved / moved.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return out


class WriteGateHead(nn.Module):
    """Write gate: the logit that a message will be needed later, from its embedding and signals."""

    def __init__(self, dim: int, n_side: int, hidden: int = 32) -> None:
        super().__init__()
        self.norm = Standardise(n_side)
        self.embed = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, hidden))
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden + n_side, 1))

    def forward(self, emb: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.embed(emb), self.norm(side)], dim=-1)
        out: torch.Tensor = self.out(h).squeeze(-1)
        return out


class RouterHead(nn.Module):
    """Query router: per retriever, the logit that its ranking holds the evidence high."""

    def __init__(self, dim: int, n_side: int, n_out: int, hidden: int = 32) -> None:
        super().__init__()
        self.norm = Standardise(n_side)
        self.net = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim + n_side, hidden), nn.GELU(), nn.Linear(hidden, n_out))

    def forward(self, emb: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([emb, self.norm(side)], dim=-1))
        return out


class RetentionHead(nn.Module):
    """Retention: the logit z of beta = sigmoid(z), a memory's per-write survival factor (TRIM-KV)."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.norm = Standardise(n_features)
        # the linear path can offset the decay by log(age) exactly (a memory that must outlive its
        # age), the MLP adds the interactions
        self.linear = nn.Linear(n_features, 1)
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        out: torch.Tensor = (self.linear(z) + self.net(z)).squeeze(-1)
        return out


class EvidenceHead(nn.Module):
    """Retention's evidence head: a logistic logit over `memsvc.lifecycle.retention.context_inputs`
    (a memory's embedding and signals and those of its neighbours). Linear and unstandardised: the
    embedding coordinates keep their common scale, so the L2 penalty weighs the text as a whole
    against the few signals (standardised inputs lost 3-5 points of WR@500 in the 5-fold replay)."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x).squeeze(-1)
        return out
