"""TMD — Temporal Memory Dataset (Zyphra/TemporalMemoryDataset): re-timed LoCoMo conversations, time questions.

Every turn has its own timestamp; questions point at turns by `response_number`. Each question item
holds paraphrases; by default only the first paraphrase of each item is asked (the dev data has
thousands of paraphrases; the suite reports this choice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.datasets.base import (
    Conversation,
    Dataset,
    Question,
    Session,
    Turn,
    parse_datetime,
    session_numbers,
)
from evals.datasets.locomo import turn_content

DEV_CONVERSATIONS = ("28", "31", "41", "42", "43", "44", "45", "47")
TIME_KINDS = (
    "test_session",
    "test_dates",
    "test_date_span",
    "test_day_span",
    "test_month",
    "test_rel_day",
    "test_rel_month",
    "test_rel_session",
    "test_earlier_today",
    "test_last_named_day",
    "test_session_span",
)


def test_files() -> list[str]:
    """The 23 development test files, relative to the data root, as `<kind>/<name>` categories."""
    files = [f"tmd/TestData/time_qs/{k}_dev.json" for k in TIME_KINDS]
    files += [f"tmd/TestData/ambiguous_time_qs/{k}_dev.json" for k in TIME_KINDS]
    files.append("tmd/TestData/content_time_qs/content_time_qs_dev.json")
    return files


def category_of(path: str) -> str:
    kind, name = path.split("/")[-2:]
    return f"{kind}/{name.removesuffix('_dev.json').removeprefix('test_')}"


def question_text(paraphrase: Any) -> str:
    """A plain question, or an ambiguous one given as a short dialogue (`speaker: text` lines)."""
    if isinstance(paraphrase, list):
        return "\n".join(f"{p['speaker']}: {p['text']}" for p in paraphrase)
    return str(paraphrase)


def parse_conversation(conv_id: str, record: dict[str, Any]) -> Conversation:
    sessions = []
    for n in session_numbers(record):
        turns = tuple(
            Turn(
                id=str(t["response_number"]),
                text=turn_content(t),
                speaker=t["speaker"],
                role="user",
                timestamp=parse_datetime(t.get("date_time")),
                meta={"dia_id": t.get("dia_id")},
            )
            for t in record[f"session_{n}"]
        )
        if turns:
            when = parse_datetime(record.get(f"session_{n}_date_time")) or turns[0].timestamp
            sessions.append(Session(id=f"session_{n}", timestamp=when, turns=turns))
    return Conversation(
        id=conv_id, sessions=tuple(sessions), speakers=(record["speaker_a"], record["speaker_b"])
    )


def parse_test_file(path: str, record: dict[str, Any], paraphrases: str = "first") -> list[Question]:
    category = category_of(path)
    out = []
    for conv in record["file_indexes"]:
        for i, item in enumerate(record.get(f"file_{conv}", [])):
            texts = item["questions"] if paraphrases == "all" else item["questions"][:1]
            for j, paraphrase in enumerate(texts):
                out.append(
                    Question(
                        id=f"{category}:{conv}:{i}:{j}",
                        scene=str(conv),
                        text=question_text(paraphrase),
                        category=category,
                        evidence=tuple(str(d) for d in item["relevant_docs"]),
                        meta={"paraphrases": len(item["questions"])},
                    )
                )
    return out


def load_tmd(root: Path, paraphrases: str = "first") -> Dataset:
    conversations, files = [], []
    for conv_id in DEV_CONVERSATIONS:
        file = root / "tmd" / "ConversationData" / f"{conv_id}.json"
        conversations.append(parse_conversation(conv_id, json.loads(file.read_text(encoding="utf-8"))))
        files.append(file)
    questions: list[Question] = []
    for rel in test_files():
        file = root / rel
        questions.extend(parse_test_file(rel, json.loads(file.read_text(encoding="utf-8")), paraphrases))
        files.append(file)
    note = "first paraphrase of each question item" if paraphrases == "first" else "every paraphrase"
    return Dataset(
        name="tmd",
        conversations=tuple(conversations),
        questions=tuple(questions),
        files=tuple(files),
        notes=(f"queries: {note}; ambiguous questions are asked as their `speaker: text` dialogue",),
    )
