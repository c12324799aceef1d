"""Multi-hop recall of memsvc itself: MuSiQue / HotpotQA passages and LoCoMo multi-hop questions.

    .venv/bin/python benchmarks/multihop.py [--json eval-out/multihop.json] [--only musique,hotpotqa,locomo]
                                           [--questions 100] [--conversations 7]

Every passage is written through `build_memory_os` as one message (`infer=false`, id = passage
id, content = title + text) and searched with `preset` = keyword / dense / hybrid / hybrid_ppr
(top_k=5); results map back to passages through `source_ids`. MuSiQue is run twice for
hybrid_ppr: with the graph from memsvc's own offline extractor and with HippoRAG's GPT-3.5
OpenIE triples loaded into the graph store for the same memories (extraction vs PPR quality).
LoCoMo: each conversation's turns are written (id = dia_id, name = speaker, session timestamp);
every category-1 question is searched, results are walked by `rank` accumulating the words of
`content` up to 500, and a gold dia_id counts as found when it is in the `source_ids` seen.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.datasets.base import Document, default_data_root  # noqa: E402
from evals.datasets.hipporag import load_hotpotqa, load_musique  # noqa: E402
from evals.datasets.locomo import load_locomo  # noqa: E402
from memsvc.config import Settings  # noqa: E402
from memsvc.graph.ids import entity_id, normalize_name, relation_id  # noqa: E402
from memsvc.memory_os import MemoryOS  # noqa: E402
from memsvc.models import Entity, Mention, Relation  # noqa: E402
from memsvc.ports import MemoryQuery  # noqa: E402
from memsvc.retrieval.presets import HYBRID_PPR  # noqa: E402
from memsvc.retrieval.presets import PRESETS as PRESETS_BY_NAME  # noqa: E402
from memsvc.schemas import MessageIn, SearchRequest, WriteRequest  # noqa: E402
from storage.registry import build_memory_os  # noqa: E402

TENANT = "bench"
PRESETS = ("keyword", "dense", "hybrid", "hybrid_ppr")
OPENIE_FILE = "hipporag/openie_musique_train_results_ner_gpt-3.5-turbo-1106_1890.json"
WORD_BUDGET = 500
BATCH = 200
GRAPH_PARAMS: dict[str, float] = {}
SYSTEMS: list[str] = list(PRESETS)


def open_os(data_dir: Path) -> MemoryOS:
    """A MemoryOS on `data_dir`, with the graph retriever's parameters overridden by `--graph`."""
    mos = build_memory_os(Settings(data_dir=data_dir))
    service = getattr(mos.reader.graph_retriever, "__self__", None)
    for name, value in GRAPH_PARAMS.items():
        if not hasattr(service, name):
            raise SystemExit(f"GraphService has no parameter {name!r}")
        setattr(service, name, int(value) if isinstance(getattr(service, name), int) else value)
    return mos


def written(mos: MemoryOS, user: str) -> dict[str, str]:
    """Message id -> memory id of what the scope already holds (empty for a fresh folder)."""
    out: dict[str, str] = {}
    cursor = None
    while True:
        page = mos.list_memories(TENANT, MemoryQuery(user_id=user, limit=500, cursor=cursor))
        for m in page.items:
            for sid in m.source_ids:
                out[sid] = m.id
        cursor = page.next_cursor
        if not cursor:
            return out


def write_passages(mos: MemoryOS, user: str, docs: Sequence[Document]) -> dict[str, str]:
    """Passage id -> memory id."""
    out: dict[str, str] = {}
    for i in range(0, len(docs), BATCH):
        part = docs[i : i + BATCH]
        res = mos.add(TENANT, WriteRequest(
            user_id=user, infer=False,
            messages=[MessageIn(id=d.id, role="user", content=f"{d.title}\n{d.text}") for d in part],
        ))
        for m in res.written:
            for sid in m["source_ids"]:
                out[sid] = m["id"]
    return out


def search_ids(mos: MemoryOS, user: str, query: str, preset: str, top_k: int) -> list[dict[str, Any]]:
    res = mos.search(TENANT, SearchRequest(user_id=user, query=query, top_k=top_k, preset=preset))
    return sorted(res.results, key=lambda r: r["rank"])


def recall_at(ranked: list[dict[str, Any]], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    if not gold:
        return 0.0
    seen = {s for r in ranked[:k] for s in r["source_ids"]}
    return len(gold & seen) / len(gold)


def passage_eval(mos: MemoryOS, user: str, questions: Sequence[Any], presets: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for preset in presets:
        r2 = r5 = 0.0
        t0 = time.perf_counter()
        for q in questions:
            ranked = search_ids(mos, user, q.text, preset, 5)
            r2 += recall_at(ranked, q.evidence, 2)
            r5 += recall_at(ranked, q.evidence, 5)
        n = len(questions)
        out[preset] = {"R@2": r2 / n, "R@5": r5 / n, "ms_per_query": 1000 * (time.perf_counter() - t0) / n}
    return out


def load_openie(mos: MemoryOS, user: str, root: Path, docs: Sequence[Document], mem_of: dict[str, str]) -> int:
    """Replace the scope's graph with HippoRAG's GPT-3.5 OpenIE triples for the same memories."""
    assert mos.graph is not None
    data = json.loads((root / OPENIE_FILE).read_text(encoding="utf-8"))["docs"]
    by_title_text = {(d["title"], d["passage"].split("\n", 1)[-1].strip()): d for d in data}
    mos.graph.delete_scope(TENANT, user)
    total = 0
    for i, doc in enumerate(docs):
        rec = by_title_text.get((doc.title, doc.text.strip())) or data[i]
        mid = mem_of[doc.id]
        names: dict[str, str] = {}
        for name in [*rec["extracted_entities"], *(x for t in rec["extracted_triples"] if len(t) == 3 for x in (t[0], t[2]))]:
            key = normalize_name(str(name))
            if key:
                names.setdefault(key, str(name))
        ents = [Entity(id=entity_id(TENANT, user, k), tenant=TENANT, user_id=user, name=n) for k, n in names.items()]
        rels = []
        for t in rec["extracted_triples"]:
            if len(t) != 3:
                continue
            s, o = normalize_name(str(t[0])), normalize_name(str(t[2]))
            if not s or not o or s == o:
                continue
            sid, oid = entity_id(TENANT, user, s), entity_id(TENANT, user, o)
            pred = str(t[1]).strip().lower()
            rels.append(Relation(id=relation_id(TENANT, user, sid, pred, oid, mid), tenant=TENANT, user_id=user,
                                 subject_id=sid, predicate=pred, object_id=oid, memory_id=mid))
        ments = [Mention(tenant=TENANT, user_id=user, memory_id=mid, entity_id=e.id) for e in ents]
        mos.graph.upsert(TENANT, user, ents, rels, ments)
        total += len(rels)
    return total


def run_passages(name: str, root: Path, data_dir: Path, n_questions: int) -> dict[str, Any]:
    ds = load_musique(root) if name == "musique" else load_hotpotqa(root)
    docs = ds.corpus["all"]
    questions = ds.questions[:n_questions]
    mos = open_os(data_dir / name)
    try:
        t0 = time.perf_counter()
        mem_of = written(mos, name) or write_passages(mos, name, docs)
        write_s = time.perf_counter() - t0
        result: dict[str, Any] = {
            "passages": len(docs), "questions": len(questions), "write_s": write_s,
            "memsvc_triples": passage_eval(mos, name, questions, SYSTEMS),
        }
    finally:
        mos.close()
    if name == "musique" and "hybrid_ppr" in SYSTEMS:
        # the same records and vectors, with the graph replaced by GPT-3.5 OpenIE triples
        gpt_dir = data_dir / f"{name}-gpt35"
        if not gpt_dir.exists():
            shutil.copytree(data_dir / name, gpt_dir)
            fresh = True
        else:
            fresh = False
        mos = open_os(gpt_dir)
        try:
            if fresh:
                result["openie_relations"] = load_openie(mos, name, root, docs, mem_of)
            result["gpt35_openie_triples"] = passage_eval(mos, name, questions, ["hybrid_ppr"])
        finally:
            mos.close()
    return result


def run_locomo(root: Path, data_dir: Path, n_conversations: int) -> dict[str, Any]:
    ds = load_locomo(root)
    convs = ds.conversations[:n_conversations]
    mos = open_os(data_dir / "locomo")
    presets = SYSTEMS
    found = {p: 0.0 for p in presets}
    n_q = 0
    try:
        for conv in convs:
            for session in () if written(mos, conv.id) else conv.sessions:
                mos.add(TENANT, WriteRequest(
                    user_id=conv.id, session_id=session.id, infer=False,
                    messages=[MessageIn(id=t.id, role="user", name=t.speaker, content=t.text, timestamp=t.timestamp)
                              for t in session.turns],
                ))
            for q in ds.questions:
                if q.scene != conv.id or q.meta.get("category_number") != 1 or not q.evidence:
                    continue
                n_q += 1
                for preset in presets:
                    ranked = search_ids(mos, conv.id, q.text, preset, 60)
                    words, seen = 0, set()
                    for r in ranked:
                        if words >= WORD_BUDGET:
                            break
                        words += len(r["content"].split())
                        seen.update(r["source_ids"])
                    found[preset] += len(set(q.evidence) & seen) / len(set(q.evidence))
    finally:
        mos.close()
    return {"conversations": len(convs), "questions": n_q,
            "recall@500w": {p: found[p] / max(1, n_q) for p in presets}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path("eval-out/multihop.json"))
    ap.add_argument("--only", default="musique,hotpotqa,locomo")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--conversations", type=int, default=7)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the written data here and reuse it on the next run (default: a temporary folder)")
    ap.add_argument("--graph", action="append", default=[], metavar="NAME=VALUE",
                    help="override a GraphService read parameter (damping, passage_weight, dense_seed_weight, ...)")
    ap.add_argument("--ppr-weights", default=None, metavar="dense=1,keyword=0.5,graph=0.5",
                    help="try other RRF weights for the hybrid_ppr preset (tuning; the preset itself is unchanged)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="systems to run (default: all four)")
    args = ap.parse_args(argv)
    SYSTEMS[:] = args.presets.split(",")
    if args.ppr_weights:
        weights = {k: float(v) for k, v in (kv.split("=") for kv in args.ppr_weights.split(","))}
        PRESETS_BY_NAME["hybrid_ppr"] = replace(HYBRID_PPR, weights=weights)
    root = args.data or default_data_root()
    GRAPH_PARAMS.update((k, float(v)) for k, v in (g.split("=", 1) for g in args.graph))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="memsvc-multihop-"))
    report: dict[str, Any] = {}
    try:
        for name in args.only.split(","):
            t0 = time.perf_counter()
            if name in ("musique", "hotpotqa"):
                report[name] = run_passages(name, root, work, args.questions)
            elif name == "locomo":
                report[name] = run_locomo(root, work, args.conversations)
            report[name]["seconds"] = time.perf_counter() - t0
            print(f"{name} done in {report[name]['seconds']:.0f}s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["graph_params"] = dict(GRAPH_PARAMS)
    report["hybrid_ppr_weights"] = dict(PRESETS_BY_NAME["hybrid_ppr"].weights)
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'dataset':<10} {'triples':<8} {'system':<11} {'R@2':>6} {'R@5':>6} {'ms/q':>6}")
    for name in ("musique", "hotpotqa"):
        if name not in report:
            continue
        for source, key in (("memsvc", "memsvc_triples"), ("gpt-3.5", "gpt35_openie_triples")):
            for preset, row in report[name].get(key, {}).items():
                print(f"{name:<10} {source:<8} {preset:<11} {row['R@2']:6.3f} {row['R@5']:6.3f} {row['ms_per_query']:6.0f}")
    if "locomo" in report:
        loc = report["locomo"]
        print(f"\nLoCoMo multi-hop (cat 1, {loc['questions']} questions): recall within {WORD_BUDGET} words")
        for preset, value in loc["recall@500w"].items():
            print(f"  {preset:<11} {value:.3f}")


if __name__ == "__main__":
    main()
