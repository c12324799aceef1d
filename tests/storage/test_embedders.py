"""The local embedder: precision choice and what bf16 does to the vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memsvc.config import LocalEmbedder
from storage.embedders import (
    SentenceTransformerEmbedder,
    cpu_has_native_bf16,
    resolve_precision,
    resolve_query_precision,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f {extra}
bugs\t\t: sysret_ss_attrs
"""

TEXTS = [
    "Caroline went to an LGBTQ support group on Tuesday.",
    "Melanie paints sunsets by the lake near her house.",
    "The Berlin office moved to a new building in May 2023.",
    "My cat Miso likes to sleep on the radiator.",
    "To reset the router, hold the button for ten seconds and wait for the light.",
]


@pytest.mark.parametrize(("extra", "native"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512bw", False)])
def test_native_bf16_is_read_off_the_cpu_flags(tmp_path: Path, extra: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    assert cpu_has_native_bf16(info) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path: Path) -> None:
    assert cpu_has_native_bf16(tmp_path / "absent") is False


def test_auto_precision_is_bf16_only_on_a_native_bf16_cpu() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cuda") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")


@pytest.fixture(scope="module")
def fp32_and_bf16() -> tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder]:
    return (SentenceTransformerEmbedder(LocalEmbedder(device="cpu", precision="fp32")),
            SentenceTransformerEmbedder(LocalEmbedder(device="cpu", precision="bf16")))


def test_bf16_vectors_are_unit_length_and_close_to_fp32(
    fp32_and_bf16: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
) -> None:
    full, half = fp32_and_bf16
    assert (full.precision, half.precision) == ("fp32", "bf16")
    a, b = full.embed(TEXTS), half.embed(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (len(TEXTS), full.dim)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.99
    # the ranking a query gets is the same
    for query in ("Who paints?", "How do I reset the router?", "Where is the office?"):
        assert np.argsort(-(a @ full.embed_query(query))).tolist() == np.argsort(-(b @ half.embed_query(query))).tolist()


def test_a_query_is_embedded_as_the_same_text_written() -> None:
    """Queries run on a model instance of their own; with `query_precision=same` it gives the
    documents' vectors exactly."""
    emb = SentenceTransformerEmbedder(LocalEmbedder(query_precision="same"))
    text = "Where does Alice live now that she moved to Berlin?"
    assert float(emb.embed_query(text) @ emb.embed([text])[0]) > 0.9999


def test_auto_query_precision_is_int8_on_cpu_only() -> None:
    assert resolve_query_precision("auto", "cpu", "bf16") == "int8"
    assert resolve_query_precision("auto", "cuda", "fp32") == "fp32"
    assert resolve_query_precision("same", "cpu", "bf16") == "bf16"
    assert resolve_query_precision("int8", "cuda", "fp32") == "int8"


def test_int8_queries_rank_the_documents_as_the_full_model_does(
    fp32_and_bf16: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
) -> None:
    """The default query model is quantised; the documents' vectors are not."""
    full, _ = fp32_and_bf16
    int8 = SentenceTransformerEmbedder(LocalEmbedder(device="cpu", query_precision="int8"))
    assert int8.query_precision == "int8"
    docs = int8.embed(TEXTS)
    for query in ("Who paints?", "How do I reset the router?", "Where is the office?", "Which pet sleeps where?"):
        q8, q32 = int8.embed_query(query), full.embed_query(query)
        assert abs(float(np.linalg.norm(q8)) - 1.0) < 1e-5 and float(q8 @ q32) > 0.85
        assert int(np.argmax(docs @ q8)) == int(np.argmax(full.embed(TEXTS) @ q32))


def test_the_traced_query_model_gives_the_eager_int8_vectors() -> None:
    """The default CPU query path runs the int8 model traced by TorchScript; it must give the vectors
    `SentenceTransformer.encode` gives on the same quantised model, for short and truncated texts."""
    emb = SentenceTransformerEmbedder(LocalEmbedder(device="cpu", query_precision="int8"))
    assert emb._traced_query is not None
    long_text = " ".join(TEXTS * 40)  # > 256 tokens: truncated like the eager path
    for text in [*TEXTS, "Who paints?", "ok", long_text]:
        eager = emb._query_model.encode([text], convert_to_numpy=True, show_progress_bar=False)[0]
        eager = eager / np.linalg.norm(eager)
        assert float(emb.embed_query(text) @ eager) > 0.99999


def test_a_model_that_does_not_mean_pool_is_not_traced() -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    from storage.embedders import TracedQueryEncoder, packaged_minilm_path

    mean = SentenceTransformer(packaged_minilm_path(), device="cpu")
    assert TracedQueryEncoder.build(mean) is not None
    cls = SentenceTransformer(modules=[mean[0], Pooling(384, pooling_mode="cls")],
                              device="cpu")
    assert TracedQueryEncoder.build(cls) is None
