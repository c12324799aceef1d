"""REALTALK (danny911kr/REALTALK): 21-day messaging between real people; QA in LoCoMo's numbering."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evals.datasets.base import (
    Conversation,
    Dataset,
    Question,
    Session,
    Turn,
    answer_text,
    parse_datetime,
    session_numbers,
)

DEV_FILES = (
    "Chat_1_Emi_Elise",
    "Chat_2_Kevin_Elise",
    "Chat_3_Kevin_Paola",
    "Chat_4_Emi_Paola",
    "Chat_6_Vanessa_Nicolas",
    "Chat_7_Nebraas_Vanessa",
    "Chat_9_Fahim_Akib",
)
CATEGORIES = {1: "multi_hop", 2: "temporal_reasoning", 3: "commonsense"}
_DIA_ID = re.compile(r"D\d+:\d+")


def normalise_ref(ref: str) -> str:
    """The data README's rule: remove spaces and trailing dots (`"D 2:18"`, `"D20:17."`)."""
    return str(ref).replace(" ", "").rstrip(".")


def normalise_evidence(refs: list[Any]) -> tuple[str, ...]:
    """README rule, and also split the few entries that hold two ids (`"D13:4. D14:4"`)."""
    out: list[str] = []
    for ref in refs:
        for part in _DIA_ID.findall(normalise_ref(ref)) or [normalise_ref(ref)]:
            if part not in out:
                out.append(part)
    return tuple(out)


def parse_chat(name: str, record: dict[str, Any]) -> tuple[Conversation, list[Question]]:
    sessions = []
    for n in session_numbers(record):
        msgs = record[f"session_{n}"]
        turns = tuple(
            Turn(
                id=m["dia_id"],
                text=str(m["clean_text"]).strip(),
                speaker=m["speaker"],
                role="user",
                timestamp=parse_datetime(m.get("date_time")),
                meta={"image": bool(m.get("img_url"))},
            )
            for m in msgs
            if str(m.get("clean_text", "")).strip()
        )
        if turns:
            when = parse_datetime(record.get(f"session_{n}_date_time")) or turns[0].timestamp
            sessions.append(Session(id=f"session_{n}", timestamp=when, turns=turns))
    names = record["name"]
    conversation = Conversation(
        id=name, sessions=tuple(sessions), speakers=(names["speaker_1"], names["speaker_2"])
    )
    questions = [
        Question(
            id=f"{name}:q{i}",
            scene=name,
            text=qa["question"],
            category=CATEGORIES[int(qa["category"])],
            evidence=normalise_evidence(qa.get("evidence") or []),
            answer=answer_text(qa.get("answer")),
            meta={"raw_evidence": list(qa.get("evidence") or [])},
        )
        for i, qa in enumerate(record["qa"])
    ]
    return conversation, questions


def load_realtalk(root: Path, names: tuple[str, ...] = DEV_FILES) -> Dataset:
    conversations, questions, files = [], [], []
    for name in names:
        file = root / "realtalk" / f"{name}.json"
        conv, qs = parse_chat(name, json.loads(file.read_text(encoding="utf-8")))
        conversations.append(conv)
        questions.extend(qs)
        files.append(file)
    return Dataset(
        name="realtalk",
        conversations=tuple(conversations),
        questions=tuple(questions),
        files=tuple(files),
        notes=("evidence ids normalised by removing spaces and trailing dots",),
    )
