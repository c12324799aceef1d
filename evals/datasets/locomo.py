"""LoCoMo (snap-research/LoCoMo, CC BY-NC 4.0): long dated conversations between two people, QA with evidence.

Categories in the numbering of the LoCoMo evaluation code: 1 multi-hop, 2 temporal, 3 open-domain,
4 single-hop, 5 adversarial (unanswerable; reported separately).
"""

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

DEV_FILE = "locomo/locomo10_dev.json"
CATEGORIES = {1: "multi_hop", 2: "temporal_reasoning", 3: "open_domain", 4: "single_hop", 5: "adversarial"}
RETRIEVAL_CATEGORIES = ("multi_hop", "temporal_reasoning", "open_domain", "single_hop")
_DIA_ID = re.compile(r"D(\d+):(\d+)")


def normalise_evidence(refs: list[Any]) -> tuple[str, ...]:
    """Split malformed entries (`"D8:6; D9:17"`), repair `D:11:26`, drop what names no turn (`"D"`)."""
    out: list[str] = []
    for ref in refs:
        for part in re.split(r"[;,\s]+", str(ref)):
            part = part.strip().rstrip(".").replace("D:", "D", 1)
            match = _DIA_ID.fullmatch(part)
            if match and part not in out:
                out.append(part)
    return tuple(out)


def turn_content(turn: dict[str, Any], include_captions: bool = True) -> str:
    """The turn's text; a shared photo adds its BLIP caption, as the LoCoMo RAG code does."""
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    if include_captions and caption:
        text = f"{text} [shared an image: {caption}]".strip()
    return text


def parse_conversation(record: dict[str, Any], include_captions: bool = True) -> Conversation:
    conv = record["conversation"]
    sessions = []
    for n in session_numbers(conv):
        when = parse_datetime(conv.get(f"session_{n}_date_time"))
        turns = tuple(
            Turn(
                id=t["dia_id"],
                text=turn_content(t, include_captions),
                speaker=t["speaker"],
                role="user",
                timestamp=when,
                meta={"image": bool(t.get("img_url"))},
            )
            for t in conv[f"session_{n}"]
        )
        if turns:
            sessions.append(Session(id=f"session_{n}", timestamp=when, turns=turns))
    return Conversation(
        id=record["sample_id"],
        sessions=tuple(sessions),
        speakers=(conv["speaker_a"], conv["speaker_b"]),
    )


def parse_questions(record: dict[str, Any]) -> list[Question]:
    sample = record["sample_id"]
    out = []
    for i, qa in enumerate(record["qa"]):
        category = CATEGORIES[int(qa["category"])]
        out.append(
            Question(
                id=f"{sample}:q{i}",
                scene=sample,
                text=qa["question"],
                category=category,
                evidence=normalise_evidence(qa.get("evidence") or []),
                answer=answer_text(qa.get("answer")),
                meta={
                    "raw_evidence": list(qa.get("evidence") or []),
                    "adversarial_answer": qa.get("adversarial_answer"),
                    "category_number": int(qa["category"]),
                },
            )
        )
    return out


def load_locomo(root: Path, path: str = DEV_FILE, include_captions: bool = True) -> Dataset:
    file = root / path
    records = json.loads(file.read_text(encoding="utf-8"))
    conversations = tuple(parse_conversation(r, include_captions) for r in records)
    questions = tuple(q for r in records for q in parse_questions(r))
    return Dataset(
        name="locomo",
        conversations=conversations,
        questions=questions,
        files=(file,),
        notes=("turns that shared a photo carry its BLIP caption as `[shared an image: …]`",),
    )
