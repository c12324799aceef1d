"""Baselines over the same messages memsvc receives: BM25 (bm25s), dense MiniLM, hybrid RRF.

Each baseline is a `MemoryClient`: a written message becomes one "memory" whose content is
`speaker: text` (as memsvc's episodic cubes) and whose `source_ids` is `[message id]`; search ranks
the memories of the request's user scope. One embedding model is loaded per run (`Encoder`); written
texts are encoded in one batched pass at `flush()` (timed as part of the writes) and cached, so the
hybrid reuses the document vectors of the dense run (its write throughput excludes encoding); queries
are encoded by each system at search time (latencies include it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memsvc.config import LocalEmbedder
from memsvc.schemas import MessageIn, SearchRequest, SearchResult, WriteRequest, WriteResult
from storage.embedders import SentenceTransformerEmbedder

BASELINES = ("bm25", "dense", "hybrid")
RRF_K = 60


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = Σ 1 / (k + rank), rank 1-based; ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def memory_text(msg: MessageIn) -> str:
    return f"{msg.name}: {msg.content}" if msg.name else msg.content


class Encoder:
    """memsvc's own local embedder (all-MiniLM-L6-v2, packaged copy, same precision as memsvc's
    default), loaded on first use; caches document vectors by text."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64, device: str = "cpu",
                 precision: Literal["auto", "fp32", "bf16"] = "auto", torch_threads: int | None = None) -> None:
        self._config = LocalEmbedder(model_path=model_path, batch_size=batch_size, device=device, precision=precision,
                                     torch_threads=torch_threads)
        self._model: SentenceTransformerEmbedder | None = None
        self._cache: dict[str, np.ndarray] = {}

    def _load(self) -> SentenceTransformerEmbedder:
        if self._model is None:
            self._model = SentenceTransformerEmbedder(self._config)
        return self._model

    @property
    def model_name(self) -> str:
        return self._load().model_name

    def encode_query(self, text: str) -> np.ndarray:
        """Not cached: each system pays for its own query encoding, so latencies compare."""
        return self._load().embed_query(text)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._load().embed(missing), strict=True))
        if not texts:
            return np.zeros((0, self._load().dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


@dataclass
class _Scope:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    messages: dict[str, MessageIn] = field(default_factory=dict)
    index: Any = None  # built lazily after writes


def _memory(msg: MessageIn, user_id: str, score: float) -> dict[str, Any]:
    when = msg.timestamp.isoformat() if msg.timestamp else None
    return {
        "id": msg.id, "type": "episodic", "content": memory_text(msg), "user_id": user_id,
        "source_ids": [msg.id], "event_time": when, "score": score,
    }


class _Baseline:
    name = "baseline"

    def __init__(self) -> None:
        self._scopes: dict[str, _Scope] = {}

    def add(self, req: WriteRequest) -> WriteResult:
        scope = self._scopes.setdefault(req.user_id, _Scope())
        written, skipped, texts = [], [], []
        for msg in req.messages:
            mid = msg.id or f"{req.user_id}:{len(scope.ids)}"
            if mid in scope.messages:
                skipped.append({"message_id": mid, "reason": "duplicate"})
                continue
            msg = msg.model_copy(update={"id": mid})
            scope.ids.append(mid)
            texts.append(memory_text(msg))
            scope.messages[mid] = msg
            written.append(_memory(msg, req.user_id, 0.0))
        scope.texts.extend(texts)
        scope.index = None
        return WriteResult.model_validate({"written": written, "skipped": skipped})

    def flush(self) -> None:
        """Finish indexing what was written (the runner times this as part of the writes)."""
        for scope in self._scopes.values():
            self._build(scope)

    def _build(self, scope: _Scope) -> None:
        """Build the scope's index if writes made it stale."""

    def rank(self, scope: _Scope, query: str, k: int) -> list[tuple[str, float]]:
        raise NotImplementedError

    def search(self, req: SearchRequest) -> SearchResult:
        scope = self._scopes.get(req.user_id)
        if scope is None or not scope.ids:
            return SearchResult(results=[], context="")
        ranked = self.rank(scope, req.query, req.top_k)
        results = [_memory(scope.messages[mid], req.user_id, score) for mid, score in ranked[: req.top_k]]
        return SearchResult(results=results, context="\n".join(r["content"] for r in results))

    def close(self) -> None:
        self._scopes.clear()


class BM25Client(_Baseline):
    """Okapi BM25 (bm25s defaults, English stop words) over each scope's messages; zero scores dropped."""

    name = "bm25"

    def _build(self, scope: _Scope) -> None:
        import bm25s

        if scope.index is None:
            scope.index = bm25s.BM25()
            scope.index.index(bm25s.tokenize(scope.texts, stopwords="en", show_progress=False), show_progress=False)

    def rank(self, scope: _Scope, query: str, k: int) -> list[tuple[str, float]]:
        import bm25s

        self._build(scope)
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        tokens = [t for t in tokens if t in scope.index.vocab_dict]
        if not tokens:
            return []
        docs, scores = scope.index.retrieve([tokens], k=min(k, len(scope.ids)), show_progress=False)
        return [(scope.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


class DenseClient(_Baseline):
    """Cosine similarity of MiniLM embeddings (exact search)."""

    name = "dense"

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def flush(self) -> None:
        pending = [t for scope in self._scopes.values() if scope.index is None for t in scope.texts]
        self.encoder.encode(pending)  # one batched pass over everything written since the last flush
        super().flush()

    def _build(self, scope: _Scope) -> None:
        if scope.index is None:
            scope.index = self.encoder.encode(scope.texts)

    def rank(self, scope: _Scope, query: str, k: int) -> list[tuple[str, float]]:
        self._build(scope)
        sims = scope.index @ self.encoder.encode_query(query)
        top = np.argsort(-sims, kind="stable")[:k]
        return [(scope.ids[int(i)], float(sims[i])) for i in top]


class HybridClient(_Baseline):
    """RRF (k=60) of the BM25 and dense rankings, each cut at `candidates`."""

    name = "hybrid"

    def __init__(self, encoder: Encoder, candidates: int = 100) -> None:
        super().__init__()
        self._bm25, self._dense = BM25Client(), DenseClient(encoder)
        self._candidates = candidates

    def add(self, req: WriteRequest) -> WriteResult:
        self._bm25.add(req)
        return self._dense.add(req)

    def flush(self) -> None:
        self._bm25.flush()
        self._dense.flush()

    def search(self, req: SearchRequest) -> SearchResult:
        scope = self._dense._scopes.get(req.user_id)
        if scope is None or not scope.ids:
            return SearchResult(results=[], context="")
        n = max(self._candidates, req.top_k)
        sparse = [d for d, _ in self._bm25.rank(self._bm25._scopes[req.user_id], req.query, n)]
        dense = [d for d, _ in self._dense.rank(scope, req.query, n)]
        fused = rrf([sparse, dense])[: req.top_k]
        results = [_memory(scope.messages[mid], req.user_id, score) for mid, score in fused]
        return SearchResult(results=results, context="\n".join(r["content"] for r in results))


def make_baseline(name: str, encoder: Encoder) -> _Baseline:
    if name == "bm25":
        return BM25Client()
    if name == "dense":
        return DenseClient(encoder)
    if name == "hybrid":
        return HybridClient(encoder)
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
