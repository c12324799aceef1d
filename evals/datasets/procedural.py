"""Procedural-memory corpora: Proced_mem_bench, ReMe task memories, Gorilla APIBench, ToolBench."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from evals.datasets.base import Dataset, Document, Question

# --- Proced_mem_bench (qpiai/Proced_mem_bench) -------------------------------------------------


def trajectory_document(traj: dict[str, Any]) -> Document:
    """Text = the task description plus the actions taken (states are left out: long and repetitive)."""
    actions = "; ".join(str(s["action"]).strip() for s in traj["state_action_pairs"])
    return Document(id=traj["task_instance_id"], text=f"{traj['task_description'].strip()} Actions: {actions}")


def load_proced_mem_bench(root: Path) -> Dataset:
    corpus_file = root / "proced_mem_bench" / "agentinstruct_trajectories.json"
    query_file = root / "proced_mem_bench" / "query_bank_dev.json"
    trajectories = json.loads(corpus_file.read_text(encoding="utf-8"))["trajectories"]
    queries = json.loads(query_file.read_text(encoding="utf-8"))["queries"]
    questions = tuple(
        Question(
            id=q["query_id"],
            scene="all",
            text=q["query_text"],
            category=q["tier"].lower(),
            evidence=tuple(r["trajectory_id"] for r in q["relevant_trajectories"]),
            meta={"grades": {r["trajectory_id"]: r["relevance_score"] for r in q["relevant_trajectories"]}},
        )
        for q in queries
    )
    return Dataset(
        name="proced_mem_bench",
        corpus={"all": tuple(trajectory_document(t) for t in trajectories)},
        questions=questions,
        files=(corpus_file, query_file),
        notes=("documents = task description + actions; qrels binary (every listed trajectory, score >= 6)",),
    )


# --- ReMe (agentscope-ai/ReMe task memories) ----------------------------------------------------

REME_WORKSPACES = (
    "appworld_qwen3_14b",
    "appworld_qwen3_32b",
    "appworld_qwen3_8b",
    "bfcl_qwen3_14b",
    "bfcl_qwen3_32b",
    "bfcl_qwen3_8b",
)


def load_reme(root: Path, workspaces: tuple[str, ...] = REME_WORKSPACES) -> Dataset:
    """Queries: each memory's `generalized_query` (one relevant memory) and each distinct `task_query`
    (relevant = every memory distilled for that task), one scene per workspace."""
    corpus: dict[str, tuple[Document, ...]] = {}
    questions: list[Question] = []
    files = []
    for ws in workspaces:
        file = root / "reme" / f"{ws}_dev.jsonl"
        files.append(file)
        memories = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        corpus[ws] = tuple(
            Document(id=m["memory_id"], text=f"{m['when_to_use'].strip()}\n{m['content'].strip()}")
            for m in memories
        )
        by_task: dict[str, list[str]] = defaultdict(list)
        for m in memories:
            meta = m["metadata"]
            by_task[meta["task_query"]].append(m["memory_id"])
            questions.append(
                Question(
                    id=f"{ws}:g:{m['memory_id']}",
                    scene=ws,
                    text=meta["generalized_query"],
                    category="generalized_query",
                    evidence=(m["memory_id"],),
                    meta={"kind": meta.get("category")},
                )
            )
        for i, (task_query, ids) in enumerate(by_task.items()):
            questions.append(
                Question(
                    id=f"{ws}:t:{i}", scene=ws, text=task_query, category="task_query", evidence=tuple(ids)
                )
            )
    return Dataset(name="reme", corpus=corpus, questions=tuple(questions), files=tuple(files),
                   notes=("documents = when_to_use + content; one scene per workspace",))


# --- Gorilla APIBench (ShishirPatil/gorilla) ------------------------------------------------------

GORILLA_HUBS = {  # hub -> (API file, eval file)
    "huggingface": ("huggingface_api.jsonl", "huggingface_eval_dev.json"),
    "tensorflowhub": ("tensorflowhub_api.jsonl", "tensorflow_eval_dev.json"),
    "torchhub": ("torchhub_api.jsonl", "torchhub_eval_dev.json"),
}
_API_TEXT_FIELDS = ("domain", "framework", "functionality", "api_name", "api_call", "description")
_INSTRUCTION = re.compile(r"###Instruction:\s*(.*?)\s*(?:###Output:|$)", re.S)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def api_document(hub: str, index: int, record: dict[str, Any]) -> Document:
    """Text = the record's descriptive fields (domain, framework, functionality, name, call, description)."""
    parts = [f"{k}: {record[k]}" for k in _API_TEXT_FIELDS if record.get(k)]
    return Document(id=f"{hub}:{index}", text="\n".join(parts))


def instruction(code: str) -> str:
    match = _INSTRUCTION.search(code)
    return (match.group(1) if match else code).strip()


def gorilla_relevant(api_data: dict[str, Any], records: list[dict[str, Any]], hub: str) -> tuple[tuple[str, ...], bool]:
    """Ids of the API records equal to `api_data`; failing that, those with the same `api_call`, then
    the same `api_name` (52 Hugging Face records differ from every API record by call arguments)."""
    equal = tuple(f"{hub}:{i}" for i, r in enumerate(records) if r == api_data)
    if equal:
        return equal, True
    for key in ("api_call", "api_name"):
        same = tuple(f"{hub}:{i}" for i, r in enumerate(records) if r.get(key) == api_data.get(key))
        if same:
            return same, False
    return (), False


def load_gorilla(root: Path, hubs: tuple[str, ...] = tuple(GORILLA_HUBS)) -> Dataset:
    corpus: dict[str, tuple[Document, ...]] = {}
    questions: list[Question] = []
    files = []
    for hub in hubs:
        api_name, eval_name = GORILLA_HUBS[hub]
        api_file, eval_file = root / "gorilla" / "api" / api_name, root / "gorilla" / "apibench" / eval_name
        files += [api_file, eval_file]
        records = _jsonl(api_file)
        corpus[hub] = tuple(api_document(hub, i, r) for i, r in enumerate(records))
        for i, ev in enumerate(_jsonl(eval_file)):
            relevant, exact = gorilla_relevant(ev["api_data"], records, hub)
            questions.append(
                Question(
                    id=f"{hub}:{i}", scene=hub, text=instruction(ev["code"]), category=hub,
                    evidence=relevant, meta={"exact_match": exact},
                )
            )
    return Dataset(name="gorilla", corpus=corpus, questions=tuple(questions), files=tuple(files),
                   notes=("one corpus (scene) per hub; qrels = API records equal to `api_data`, else same `api_call`, else same `api_name`",))


# --- ToolBench (StableToolBench solvable test queries) ---------------------------------------------

TOOLBENCH_GROUPS = ("G1_instruction", "G1_category", "G1_tool", "G2_instruction", "G2_category", "G3_instruction")


def api_key(api: dict[str, Any]) -> str:
    """(category, tool, API): a few (tool, API) pairs appear under two categories with other texts."""
    return f"{api.get('category_name')}::{api['tool_name']}::{api['api_name']}"


def toolbench_document(api: dict[str, Any]) -> Document:
    """Text = category, tool, API name, description and parameter names/descriptions."""
    params = []
    for p in list(api.get("required_parameters") or []) + list(api.get("optional_parameters") or []):
        desc = str(p.get("description") or "").strip()
        params.append(f"{p.get('name')} ({p.get('type')}){': ' + desc if desc else ''}")
    text = (
        f"{api.get('category_name')} / {api['tool_name']} / {api['api_name']}: "
        f"{str(api.get('api_description') or '').strip()}"
    )
    if params:
        text += "\nParameters: " + "; ".join(params)
    return Document(id=api_key(api), text=text)


def load_toolbench(root: Path, groups: tuple[str, ...] = TOOLBENCH_GROUPS) -> Dataset:
    docs: dict[str, Document] = {}
    questions: list[Question] = []
    files = []
    for group in groups:
        file = root / "toolbench" / "test_instruction" / f"{group}_dev.json"
        files += [file, root / "toolbench" / "test_query_ids" / f"{group}_dev.json"]
        for q in json.loads(file.read_text(encoding="utf-8")):
            keys = {(a["tool_name"], a["api_name"]): api_key(a) for a in q["api_list"]}
            for api in q["api_list"]:
                docs.setdefault(api_key(api), toolbench_document(api))
            questions.append(
                Question(
                    id=f"{group}:{q['query_id']}",
                    scene="all",
                    text=q["query"],
                    category=group,
                    evidence=tuple(dict.fromkeys(keys[(t, a)] for t, a in q["relevant APIs"])),
                    meta={"candidates": list(dict.fromkeys(keys.values())), "relevant_pairs": len(q["relevant APIs"])},
                )
            )
    return Dataset(name="toolbench", corpus={"all": tuple(docs.values())}, questions=tuple(questions),
                   files=tuple(files), notes=("corpus = union of all `api_list` entries, key (category, tool, API)",))
