"""KnowMe-Bench (QuantaAlpha/KnowMeBench): first-person narrative streams and questions with evidence.

dataset1 (flashback-intensive, Knausgård) and dataset3 (psychological depth, Proust); dataset2 is not
in the development data. One corpus per dataset: the narrative records, in time order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.datasets.base import Dataset, Document, Question, answer_text, parse_datetime

DATASETS = ("dataset1", "dataset3")
TASKS = (
    "Adversarial Abstention",
    "Expert-Annotated Psychoanalysis",
    "Information Extraction",
    "Logical Event Ordering",
    "Mind-Body Interaction",
    "Mnestic Trigger Analysis",
    "Temporal Reasoning",
)
# LMEB's KnowMeBench subsets: the five tasks whose answers carry evidence.
RETRIEVAL_TASKS = (
    "Adversarial Abstention",
    "Information Extraction",
    "Mind-Body Interaction",
    "Mnestic Trigger Analysis",
    "Temporal Reasoning",
)
_META_FIELDS = {"id", "timestamp", "location", "category"}


def slug(task: str) -> str:
    return task.lower().replace("-", "_").replace(" ", "_")


def record_document(record: dict[str, Any]) -> Document:
    """Text = the record's non-null narrative fields in file order; title = timestamp and location."""
    parts = [str(v).strip() for k, v in record.items() if k not in _META_FIELDS and v]
    when = parse_datetime(record.get("timestamp"))
    title = " ".join(str(x) for x in (record.get("timestamp"), record.get("location")) if x)
    return Document(
        id=str(record["id"]),
        text=" ".join(p for p in parts if p),
        title=title,
        timestamp=when,
        session=str(record.get("timestamp") or "")[:10] or None,
    )


def evidence_ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(str(v) for v in values))


def _task_file(folder: Path, task: str) -> Path:
    matches = sorted(folder.glob(f"{task}_*_dev.json"))
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one file for {task!r} in {folder}, found {matches}")
    return matches[0]


def load_knowmebench(root: Path, datasets: tuple[str, ...] = DATASETS) -> Dataset:
    corpus: dict[str, tuple[Document, ...]] = {}
    questions: list[Question] = []
    files: list[Path] = []
    for ds in datasets:
        base = root / "knowmebench" / ds
        narrative = base / "input" / f"{ds}.json"
        records = json.loads(narrative.read_text(encoding="utf-8"))
        corpus[ds] = tuple(record_document(r) for r in records)
        files.append(narrative)
        for task in TASKS:
            qfile, afile = _task_file(base / "question", task), _task_file(base / "answer", task)
            files += [qfile, afile]
            answers = {str(a["id"]): a for a in json.loads(afile.read_text(encoding="utf-8"))}
            for q in json.loads(qfile.read_text(encoding="utf-8")):
                a = answers.get(str(q["id"]), {})
                answer = a.get("answer")
                questions.append(
                    Question(
                        id=f"{ds}:{slug(task)}:{q['id']}",
                        scene=ds,
                        text=q["question"],
                        category=slug(task),
                        evidence=evidence_ids(a.get("evidence")),
                        answer=answer if isinstance(answer, str) else answer_text(answer and json.dumps(answer)),
                        meta={"strategy": a.get("strategy"), "type": a.get("type")},
                    )
                )
    return Dataset(
        name="knowmebench",
        corpus=corpus,
        questions=tuple(questions),
        files=tuple(files),
        notes=("documents = narrative records (non-null fields); queries = the five tasks with evidence",),
    )
