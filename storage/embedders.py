"""Embedders: a local sentence-transformers model (default) or an OpenAI-compatible endpoint."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from memsvc.config import LocalEmbedder, OpenAIEmbedder
from memsvc.learn.artefact import packaged_minilm_path

log = logging.getLogger(__name__)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (zero rows stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# CPU flags of native bf16 arithmetic (AVX-512 BF16: Zen 4, Cooper Lake; AMX: Sapphire Rapids).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU computes bf16 itself (Linux flags); elsewhere bf16 would be emulated."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return not BF16_CPU_FLAGS.isdisjoint(flags)


def resolve_precision(precision: str, device: str) -> str:
    """`auto` is bf16 on a CPU with native bf16 (about 2x MiniLM's fp32 throughput there, cosine to
    the fp32 vectors >= 0.998), else fp32; an explicit choice is kept."""
    if precision != "auto":
        return precision
    return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"


def resolve_query_precision(query_precision: str, device: str, precision: str) -> str:
    """`auto` is int8 on CPU: the query's one short text is latency-bound, and on the development
    questions int8 ranks as well as bf16 (LoCoMo dense R@10 31.0 vs 30.8, cosine to the bf16 vector
    0.95 on average) at 7.5 instead of 11.1 ms (eager; 2.3 ms traced, `TracedQueryEncoder`); on a GPU the query model is the document model's twin."""
    if query_precision == "same" or (query_precision == "auto" and device != "cpu"):
        return precision
    return "int8"


def quantized(model: Any) -> Any | None:
    """The model with its linear layers quantised to int8 (dynamic: activations scaled per call);
    None where this torch no longer has eager-mode quantisation (deprecated upstream)."""
    import torch

    with warnings.catch_warnings():  # deprecated upstream, still shipped by the pinned torch
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        except (AttributeError, ImportError, RuntimeError) as exc:
            log.warning("int8 query model unavailable (%s): queries use the document model's precision", exc)
            return None


class TracedQueryEncoder:
    """One query at a time through the int8 model, traced and frozen by TorchScript: the same vectors
    as `SentenceTransformer.encode` on the quantised model (cosine >= 0.9999999 on LoCoMo's 1,367 questions,
    turns and 843-token texts) in about half the time (LoCoMo questions, one core of the EPYC: p50 / p95
    2.3 / 3.4 ms against 5.0 / 6.9 ms eager), as the per-operator work of eager mode and of dynamic
    quantisation was most of a 12-token forward pass. Only for a transformer followed by mean pooling
    (and normalisation), which is what the packaged MiniLM is; `build` returns None otherwise or when
    tracing fails, and the embedder then encodes eagerly."""

    def __init__(self, traced: Any, tokenizer: Any, max_length: int) -> None:
        self._traced, self._tokenizer, self._max_length = traced, tokenizer, max_length

    @classmethod
    def build(cls, model: Any) -> TracedQueryEncoder | None:
        import torch

        modules = list(model)
        names = [type(m).__name__ for m in modules]
        if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        pooling = modules[1].get_config_dict()
        if pooling.get("pooling_mode") != "mean" or not pooling.get("include_prompt", True):
            return None
        tokenizer = getattr(model, "tokenizer", None)
        backbone = getattr(modules[0], "auto_model", None)
        if tokenizer is None or backbone is None:
            return None

        class Hidden(torch.nn.Module):  # the traced graph: token states of one unpadded text
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, ids: Any, mask: Any) -> Any:
                return self.inner(input_ids=ids, attention_mask=mask, return_dict=False)[0]

        try:
            example = tokenizer(["what did she do last june"], return_tensors="pt")
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(Hidden(backbone).eval(), (example["input_ids"], example["attention_mask"]),
                                         check_trace=False)
                traced = torch.jit.freeze(traced.eval())
        except Exception as exc:  # noqa: BLE001 - any tracing failure means: encode eagerly
            log.warning("query model not traced (%s): queries are encoded eagerly", exc)
            return None
        return cls(traced, tokenizer, int(model.max_seq_length or 256))

    def encode(self, text: str) -> np.ndarray:
        import torch

        feats = self._tokenizer([text], return_tensors="pt", truncation=True, max_length=self._max_length)
        with torch.inference_mode():
            hidden = self._traced(feats["input_ids"], feats["attention_mask"])
        return hidden[0].float().mean(0).numpy()  # one text, no padding: the mean over its tokens


class SentenceTransformerEmbedder:
    def __init__(self, config: LocalEmbedder) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # Idle OpenMP workers sleep instead of spinning (read when torch loads OpenMP, so only if torch
        # is not imported yet): spinning workers took the core from spaCy on the write path. KnowMe-Bench
        # writes, spaCy's share: whole corpus 98 s with 1 torch thread, 109 s with 2 spinning; first
        # 3,100 records 47.0 s with 1, 47.5 s with 2 passive. In the service torch is imported before
        # (`storage.registry` imports spaCy, whose thinc loads torch), so this holds only for a process
        # that builds the embedder first; the service's workers keep libgomp's default short spin,
        # which the e5 engine (same runtime) needs: its query on a thread of its own took 12.8 ms p50
        # that way and 20.6 ms with passive workers (2 cores, 2026-12-07).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from sentence_transformers import SentenceTransformer

        path = config.model_path or packaged_minilm_path()
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            # Process-wide. Several request threads embed at once; oversubscribed intra-op
            # threads spin against each other (measured: 144 ms vs 15 ms per query on 2 busy cores).
            torch.set_num_threads(config.torch_threads or max(1, (os.cpu_count() or 2) // 2))
        self.precision = resolve_precision(config.precision, device)

        def load() -> SentenceTransformer:
            model = SentenceTransformer(path, device=device)
            return model.to(torch.bfloat16) if self.precision == "bf16" else model

        # Queries get a model of their own (about 45 MB in bf16): a search never waits behind a
        # write's batch, which took 100-200 ms per 50 turns. A tokenizer must not be shared by
        # threads ("Already borrowed"), so each model keeps its own lock.
        self.query_precision = resolve_query_precision(config.query_precision, device, self.precision)
        self._model = load()
        query_model = quantized(SentenceTransformer(path, device=device)) if self.query_precision == "int8" else None
        if query_model is None:
            self.query_precision, query_model = self.precision, load()
        self._query_model = query_model
        self._traced_query = TracedQueryEncoder.build(query_model) if self.query_precision == "int8" else None
        self._batch = config.batch_size
        self._lock, self._query_lock = threading.Lock(), threading.Lock()
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
                list(texts), batch_size=self._batch, convert_to_numpy=True, show_progress_bar=False,
            )
        return unit_rows(np.asarray(out, dtype=np.float32))  # normalised in fp32, whatever the model computed in

    def embed_query(self, text: str) -> np.ndarray:
        with self._query_lock:
            if self._traced_query is not None:
                out = self._traced_query.encode(text)[None, :]
            else:
                out = self._query_model.encode([text], convert_to_numpy=True, show_progress_bar=False)
        return unit_rows(np.asarray(out, dtype=np.float32))[0]


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
        return unit_rows(np.asarray([d.embedding for d in resp.data], dtype=np.float32))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
