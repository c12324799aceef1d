"""`memsvc eval <benchmark>`: a typer app (`eval_app`) the main CLI mounts as `eval`.

Also runnable alone: `python -m evals.cli locomo --out eval-out/locomo`.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from evals.baselines import BASELINES, Encoder, make_baseline
from evals.client import (
    EVAL_TORCH_THREADS,
    CrossValidatedClient,
    InProcessClient,
    MemoryClient,
    PresetClient,
    RestClient,
    build_in_process,
)
from evals.datasets.base import default_data_root
from evals.qa import QA_BENCHMARKS, SKIP_MESSAGE, QAScorer, endpoint_from_env
from evals.report import dataset_checksums, write_outputs
from evals.runner import RunOptions, run_system, scope_id, system_summary
from evals.tasks import BENCHMARKS, Task, build_task, write_lmeb
from memsvc.config import Settings
from memsvc.retrieval.presets import PRESETS

# memsvc-ppr: memsvc's own scopes searched with the `hybrid_ppr` preset (dense + BM25 + graph PPR).
# memsvc-episodes / -neighbours / -temporal / -time / -structured: the lifecycle's presets (two-level
# recall, temporal neighbours, time-narrowed queries, neighbours + time, all three).
MEMSVC_SYSTEMS = {"memsvc": None, "memsvc-hybrid": "hybrid", "memsvc-ppr": "hybrid_ppr", "memsvc-rerank": "hybrid_rerank",
                  "memsvc-ppr-rerank": "hybrid_ppr_rerank", "memsvc-episodes": "hybrid_episodes",
                  "memsvc-neighbours": "hybrid_neighbours", "memsvc-temporal": "hybrid_temporal",
                  "memsvc-temporal-rerank": "hybrid_temporal_rerank", "memsvc-temporal-adapted": "hybrid_temporal_adapted",
                  "memsvc-time": "hybrid_time", "memsvc-structured": "structured",
                  "memsvc-cross": "hybrid_temporal_cross"}
SYSTEMS = (*MEMSVC_SYSTEMS, *BASELINES)
ALL_SYSTEMS = ("memsvc", *BASELINES)  # `eval all`: the graph preset is measured per benchmark (locomo, musique)
# `memsvc eval all`: (query limit, scene limit) per task, chosen to keep the development suite under
# 30 minutes on two cores. Scenes are taken in file order and written whole; queries are balanced over
# scene × category. None = everything. Writing (embedding) the documents dominates the time.
DEV_SUITE: dict[str, tuple[int | None, int | None]] = {
    # (query limit, scene limit) per task, sized so that the suite runs in under 30 minutes on 2 cores.
    # LongMemEval is left out: only one full instance exists here (a single question);
    # `memsvc eval longmemeval --data <official files>` runs the real sets.
    "locomo": (None, None),  # 7 conversations, 4,124 turns, 1,345 scored questions
    "realtalk": (None, 3),  # Chat_1–Chat_3 of 10
    "tmd": (240, 3),  # conversations 28, 31, 41; first paraphrase; ~10 items per test file
    "knowmebench": (200, 1),  # dataset1: 6,644 narrative records; 200 of its 471 scored questions
    "proced_mem_bench": (None, None),
    "reme": (300, None),  # of 1,105 (633 generalized + 472 task queries), 50 per workspace
    "gorilla": (300, None),  # of 1,250 instructions, 100 per hub; all three API corpora
    "toolbench": (300, None),  # of 536, 50 per group
    "musique": (None, None),
    "hotpotqa": (None, None),
}

eval_app = typer.Typer(help="Run memsvc against the benchmarks, with baselines, and write a report.",
                       no_args_is_help=True, add_completion=False)


def _command() -> str:
    name = Path(sys.argv[0]).name
    prefix = ["memsvc"] if name == "memsvc" else ["python", "-m", "evals.cli"] if name == "cli.py" else [name]
    return shlex.join(prefix + sys.argv[1:])


def _systems(spec: str) -> list[str]:
    systems = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise typer.BadParameter(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    return systems


def _memsvc_client(stack: ExitStack, url: str | None, key: str | None, data_dir: Path | None,
                   rerank: bool = False) -> MemoryClient:
    """memsvc at `url`, or built in-process; `rerank`: a system reranks, so the indexer stores every
    memory's second-embedder row (`MEMSVC_SEARCH__SECOND_ROWS=on`) as a reranking deployment would."""
    if url:
        if not key:
            raise typer.BadParameter("--url needs --key (a key of the tenant to write into)")
        client: MemoryClient = RestClient(url, key)
    else:
        folder = str(data_dir) if data_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="memsvc-eval-"))
        try:
            # the rerank presets read every memory's e5 row, stored at write; the rest of the search section
            # is the environment's (MEMSVC_SEARCH__*), as a server's would be
            search = Settings().search.model_copy(update={"second_rows": "on"})
            client = build_in_process(folder, search=search) if rerank else build_in_process(folder)
        except ImportError as exc:
            typer.echo(f"memsvc cannot be built in-process ({exc}); run with --systems {','.join(BASELINES)} "
                       "or against a server with --url/--key", err=True)
            raise typer.Exit(2) from exc
    stack.callback(client.close)
    return client


def run_suite(
    benchmarks: list[str],
    data: Path,
    out: Path,
    *,
    systems: list[str] | tuple[str, ...] = SYSTEMS,
    limit: int | None = None,
    limits: dict[str, tuple[int | None, int | None]] | None = None,
    scenes: int | None = None,
    url: str | None = None,
    key: str | None = None,
    data_dir: Path | None = None,
    options: RunOptions | None = None,
    qa: bool | None = None,
    question_ids: Path | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Build each benchmark's task, run every system on the same selection, write the outputs."""
    started = time.time()
    opts = options or RunOptions(run_id=uuid.uuid4().hex[:8])
    endpoint = endpoint_from_env()
    qa_on = bool(endpoint) if qa is None else qa
    qa_message = "" if endpoint else SKIP_MESSAGE
    if qa_on and not endpoint:
        typer.echo(SKIP_MESSAGE, err=True)
    encoder = Encoder(torch_threads=EVAL_TORCH_THREADS)  # torch's thread count is per process
    results: dict[str, Any] = {"tasks": {}}
    files: list[Path] = []
    with ExitStack() as stack:
        wants_memsvc = any(s in MEMSVC_SYSTEMS for s in systems)
        reranks = any(PRESETS[p].rerank for s in systems if (p := MEMSVC_SYSTEMS.get(s)) is not None)
        memsvc = _memsvc_client(stack, url, key, data_dir, reranks) if wants_memsvc else None
        describe = getattr(memsvc, "describe", None)
        described: dict[str, Any] = describe() if callable(describe) else {"in_process": True}
        for name in benchmarks:
            extra = {"question_ids": question_ids} if name == "longmemeval" and question_ids else {}
            task: Task = build_task(name, data, **extra)
            cap, scene_cap = (limits or {}).get(name, (None, None))
            caps = [x for x in (cap, limit) if x is not None]
            task = task.select(min(caps) if caps else None, scenes if scenes is not None else scene_cap)
            files += list(task.files)
            typer.echo(f"{name}: {len(task.queries)} queries, {task.n_docs} documents, {len(task.scenes)} scene(s)",
                       err=True)
            scorer = None
            if qa_on and endpoint and name in QA_BENCHMARKS:
                scorer = QAScorer(endpoint, name, budget_words=max(opts.budgets))
            entry: dict[str, Any] = {
                "memory_type": task.memory_type, "n_docs": task.n_docs, "n_queries": len(task.queries),
                "n_scenes": len(task.scenes), "notes": list(task.notes), "dropped": task.dropped,
                "infer": task.infer if opts.infer is None else opts.infer, "systems": {},
                "qa": "" if scorer or name not in QA_BENCHMARKS else (qa_message or "QA mode off"),
            }
            item_ids = None
            for system in systems:
                if system in MEMSVC_SYSTEMS:
                    assert memsvc is not None
                    preset = MEMSVC_SYSTEMS[system]
                    client: MemoryClient = PresetClient(memsvc, preset) if preset else memsvc
                    if isinstance(memsvc, InProcessClient):
                        # a learned reranker never scores a scene it was trained on (k-fold by scene)
                        held_out = CrossValidatedClient.folds_of(memsvc._os.reader.gate)
                        by_user = {scope_id(name, scene, opts.run_id): held_out[f"{name}/{scene}"]
                                   for scene in task.scenes if f"{name}/{scene}" in held_out}
                        cross_by_user: dict[str, int] = {}
                        if preset is not None and PRESETS[preset].cross:
                            cross_held = CrossValidatedClient.cross_folds_of(memsvc._os.reader.gate)
                            cross_by_user = {scope_id(name, scene, opts.run_id): cross_held[f"{name}/{scene}"]
                                             for scene in task.scenes if f"{name}/{scene}" in cross_held}
                        client = CrossValidatedClient(memsvc, preset, by_user, cross_by_user)
                else:
                    client = make_baseline(system, encoder)
                run = run_system(task, system, client, opts, qa=scorer)
                if system not in MEMSVC_SYSTEMS:
                    client.close()
                ids = [i["id"] for i in run.items]
                if item_ids is not None and ids != item_ids:
                    raise RuntimeError(f"{name}: {system} was scored on other items than {systems[0]}")
                item_ids = ids
                entry["systems"][system] = {**system_summary(run, task), "items": run.items}
                head = entry["systems"][system]["headline"]["metrics"]
                typer.echo(f"  {system:7s} nDCG@10={head.get('nDCG@10', 0):.3f} R@10={head.get('R@10', 0):.3f} "
                           f"ER@10={head.get('ER@10', 0):.3f} WR@500={head.get('WR@500', 0):.3f} "
                           f"write={run.write_seconds:.0f}s search={run.search_seconds:.0f}s", err=True)
            entry["same_items"] = True
            results["tasks"][name] = entry
    root = data if data.is_dir() else data.parent
    results["config"] = {
        "command": command or _command(),
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "benchmarks": benchmarks, "systems": list(systems), "data": str(data),
        "memsvc": {"url": url} if url else {**described, "data_dir": str(data_dir) if data_dir else "temporary"},
        "limit": limit, "limits": limits, "scenes": scenes, "top_k": opts.top_k, "ks": list(opts.ks),
        "budgets": list(opts.budgets), "lmeb_ks": list(opts.lmeb_ks), "write_batch": opts.batch,
        "infer": opts.infer, "states_threshold": opts.states_threshold, "run_id": opts.run_id,
        "python": sys.version.split()[0],
    }
    results["datasets"] = dataset_checksums(files, root)
    results["qa"] = {"enabled": bool(qa_on and endpoint), "model": endpoint.model if endpoint else None,
                     "message": qa_message or "QA mode on"}
    paths = write_outputs(out, results)
    typer.echo(f"wrote {paths['report']} and {paths['results']}", err=True)
    return results


# --- commands ---------------------------------------------------------------------------------------

DataOpt = Annotated[Path | None, typer.Option("--data", help="data root (default $MEMSVC_DATA or ../shared/data)")]
OutOpt = Annotated[Path, typer.Option("--out", help="output folder")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="at most N queries (balanced over scene × category)")]
ScenesOpt = Annotated[int | None, typer.Option("--scenes", help="at most N scenes (conversations / corpora)")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="run memsvc over REST at this base URL")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key for --url")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="memsvc data dir (default: a temporary one)")]
SystemsOpt = Annotated[str, typer.Option("--systems", help="comma-separated: memsvc,bm25,dense,hybrid")]
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, max=200)]
InferOpt = Annotated[bool | None, typer.Option("--infer/--no-infer", help="memsvc write mode (default per task)")]
QAOpt = Annotated[bool | None, typer.Option("--qa/--no-qa", help="QA mode (default: on when an endpoint is set)")]


def _run(benchmarks: list[str], data: Path | None, out: Path, limit: int | None, scenes: int | None,
         url: str | None, key: str | None, data_dir: Path | None, systems: str, top_k: int,
         infer: bool | None, qa: bool | None, limits: dict[str, tuple[int | None, int | None]] | None = None,
         question_ids: Path | None = None) -> None:
    root = data or default_data_root()
    if not root.exists():
        raise typer.BadParameter(f"data not found at {root} (set --data or $MEMSVC_DATA)")
    opts = RunOptions(top_k=top_k, infer=infer, run_id=uuid.uuid4().hex[:8])
    run_suite(benchmarks, root, out, systems=_systems(systems), limit=limit, limits=limits, scenes=scenes,
              url=url, key=key, data_dir=data_dir, options=opts, qa=qa, question_ids=question_ids)


def _register(name: str) -> None:
    def command(
        data: DataOpt = None, out: OutOpt = Path("eval-out") / name, limit: LimitOpt = None,
        scenes: ScenesOpt = None, url: UrlOpt = None, key: KeyOpt = None, data_dir: DataDirOpt = None,
        systems: SystemsOpt = ",".join(SYSTEMS), top_k: TopKOpt = 100, infer: InferOpt = None, qa: QAOpt = None,
    ) -> None:
        _run([name], data, out, limit, scenes, url, key, data_dir, systems, top_k, infer, qa)

    command.__doc__ = f"Run the {name} benchmark."
    eval_app.command(name.replace("_", "-"))(command)


for _name in BENCHMARKS:
    if _name != "longmemeval":
        _register(_name)


@eval_app.command("longmemeval")
def longmemeval_command(
    data: Annotated[Path | None, typer.Option("--data", help="data root, or an official LongMemEval JSON file "
                                              "(longmemeval_oracle.json, longmemeval_s_cleaned.json, …)")] = None,
    question_ids: Annotated[Path | None, typer.Option("--question-ids", help="only these ids (one per line), "
                                                      "e.g. ../shared/data/longmemeval/dev_question_ids.txt")] = None,
    out: OutOpt = Path("eval-out") / "longmemeval", limit: LimitOpt = None, scenes: ScenesOpt = None,
    url: UrlOpt = None, key: KeyOpt = None, data_dir: DataDirOpt = None, systems: SystemsOpt = ",".join(SYSTEMS),
    top_k: TopKOpt = 100, infer: InferOpt = None, qa: QAOpt = None,
) -> None:
    """Run LongMemEval (each question is its own haystack and user scope)."""
    _run(["longmemeval"], data, out, limit, scenes, url, key, data_dir, systems, top_k, infer, qa,
         question_ids=question_ids)


@eval_app.command("all")
def all_command(
    data: DataOpt = None, out: OutOpt = Path("eval-out") / "all", limit: LimitOpt = None,
    url: UrlOpt = None, key: KeyOpt = None, data_dir: DataDirOpt = None,
    systems: SystemsOpt = ",".join(ALL_SYSTEMS), top_k: TopKOpt = 100, infer: InferOpt = None,
    qa: QAOpt = None,
) -> None:
    """Run the whole development suite (per-task query limits in `evals.cli.DEV_SUITE`; memsvc's default
    preset and the three baselines unless `--systems` says otherwise, e.g. `--systems memsvc-ppr,…`)."""
    _run(list(DEV_SUITE), data, out, limit, None, url, key, data_dir, systems, top_k, infer, qa, limits=DEV_SUITE)


@eval_app.command("export-lmeb")
def export_lmeb_command(
    benchmark: Annotated[str, typer.Argument(help=f"one of: {', '.join(BENCHMARKS)}")],
    out: OutOpt = Path("eval-out") / "lmeb", data: DataOpt = None,
) -> None:
    """Write a benchmark's task in LMEB layout (corpus.jsonl, queries.jsonl, qrels.tsv, candidates.jsonl)."""
    if benchmark not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}")
    task = build_task(benchmark, data or default_data_root())
    write_lmeb(task, out / benchmark)
    typer.echo(f"wrote {out / benchmark}: {task.n_docs} documents, {len(task.queries)} queries", err=True)


if __name__ == "__main__":
    eval_app()
