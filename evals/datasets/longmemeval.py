"""LongMemEval (xiaowu0162/LongMemEval, MIT): official JSON format (oracle / S / M) and the question index.

Official file: a JSON list of instances `{question_id, question_type, question, answer, question_date,
haystack_session_ids, haystack_dates, haystack_sessions, answer_session_ids}`; evidence turns carry
`has_answer: true`. Each instance is its own haystack, so each question is its own user scope.
Turn ids are `<session_id>:<turn index>` (unique within the haystack); `answer_session_ids` give the
session-level labels. The M file (~2.7 GB) needs a machine with memory for `json.load`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.datasets.base import Conversation, Dataset, Question, Session, Turn, answer_text, parse_datetime

INSTANCE_FILE = "longmemeval/longmemeval_s_cleaned_e47becba.json"
INDEX_FILE = "longmemeval/amb_longmemeval_s_queries_dev.json"
DEV_IDS_FILE = "longmemeval/dev_question_ids.txt"
QUESTION_TYPES = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "temporal-reasoning",
    "knowledge-update",
)


def turn_id(session_id: str, index: int) -> str:
    return f"{session_id}:{index}"


def session_of(doc_id: str) -> str:
    """The session id of a turn id (`<session_id>:<index>`)."""
    return doc_id.rsplit(":", 1)[0]


def parse_instance(record: dict[str, Any]) -> tuple[Conversation, Question]:
    qid = record["question_id"]
    sessions: list[Session] = []
    seen: set[str] = set()
    evidence: list[str] = []
    for sid, date, turns in zip(
        record["haystack_session_ids"], record["haystack_dates"], record["haystack_sessions"], strict=True
    ):
        if sid in seen:  # never in the official files; keeps turn ids unique if it happens
            sid = f"{sid}#{len(sessions)}"
        seen.add(sid)
        when = parse_datetime(date)
        parsed = []
        for j, turn in enumerate(turns):
            content = str(turn.get("content") or "").strip()
            if not content:
                continue
            tid = turn_id(sid, j)
            if turn.get("has_answer"):
                evidence.append(tid)
            parsed.append(Turn(id=tid, text=content, role=turn["role"], timestamp=when,
                               meta={"has_answer": bool(turn.get("has_answer"))}))
        sessions.append(Session(id=sid, timestamp=when, turns=tuple(parsed)))
    question = Question(
        id=qid,
        scene=qid,
        text=record["question"],
        category=record["question_type"],
        evidence=tuple(evidence),
        answer=answer_text(record.get("answer")),
        meta={
            "answer_session_ids": list(record.get("answer_session_ids") or []),
            "abstention": qid.endswith("_abs"),
            "question_date": record.get("question_date"),
        },
    )
    return Conversation(id=qid, sessions=tuple(sessions)), question


def read_question_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_file(data: Path) -> Path:
    """A data root (→ the one full development instance) or an official LongMemEval JSON file."""
    return data if data.is_file() else data / INSTANCE_FILE


def load_longmemeval(data: Path, question_ids: list[str] | None = None) -> Dataset:
    """Load an official-format file (or the dev instance under a data root), optionally only `question_ids`."""
    file = resolve_file(data)
    records = json.loads(file.read_text(encoding="utf-8"))
    if isinstance(records, dict):
        records = [records]
    wanted = set(question_ids) if question_ids is not None else None
    conversations, questions = [], []
    for record in records:
        if wanted is not None and record["question_id"] not in wanted:
            continue
        conv, question = parse_instance(record)
        conversations.append(conv)
        questions.append(question)
    return Dataset(
        name="longmemeval",
        conversations=tuple(conversations),
        questions=tuple(questions),
        files=(file,),
        notes=("turn-level qrels = `has_answer` turns; session-level = `answer_session_ids`",),
    )


def load_question_index(root: Path) -> tuple[Question, ...]:
    """The development question index (no chat history): ids, questions, answers, evidence sessions."""
    file = root / INDEX_FILE
    out = []
    for rec in json.loads(file.read_text(encoding="utf-8")):
        prefix = f"{rec['id']}_"
        sessions = [g.removeprefix(prefix) for g in rec.get("gold_ids") or []]
        out.append(
            Question(
                id=rec["id"],
                scene=rec.get("user_id") or rec["id"],
                text=rec["query"],
                category=rec["meta"]["question_type"],
                evidence=(),
                answer=answer_text((rec.get("gold_answers") or [None])[0]),
                meta={
                    "answer_session_ids": sessions,
                    "abstention": rec["id"].endswith("_abs"),
                    "question_date": rec["meta"].get("query_timestamp"),
                },
            )
        )
    return tuple(out)
