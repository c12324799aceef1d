"""LongMemEval loader: the one full official-format instance and the development question index."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evals.datasets.longmemeval import (
    DEV_IDS_FILE,
    load_longmemeval,
    load_question_index,
    parse_instance,
    read_question_ids,
    session_of,
)
from evals.tasks import build_task

DEV_TYPES = {  # question_type: (total, of which _abs)
    "single-session-user": (42, 4),
    "single-session-assistant": (34, 0),
    "single-session-preference": (18, 0),
    "multi-session": (80, 7),
    "temporal-reasoning": (80, 4),
    "knowledge-update": (47, 4),
}


@pytest.mark.data
def test_full_instance(data_root: Path) -> None:
    ds = load_longmemeval(data_root)
    (conv,), (q,) = ds.conversations, ds.questions
    assert (conv.id, q.id, q.scene) == ("e47becba", "e47becba", "e47becba")
    assert len(conv.sessions) == 53
    assert sum(len(s.turns) for s in conv.sessions) == 550
    assert q.category == "single-session-user" and q.answer == "Business Administration"
    assert q.meta["answer_session_ids"] == ["answer_280352e9"] and not q.meta["abstention"]
    assert q.evidence == ("answer_280352e9:4", "answer_280352e9:5")
    assert {session_of(e) for e in q.evidence} == {"answer_280352e9"}
    first = conv.sessions[0]
    assert first.id == "sharegpt_yywfIrx_0" and first.timestamp == datetime(2023, 5, 20, 2, 21, tzinfo=UTC)
    assert {t.role for s in conv.sessions for t in s.turns} == {"user", "assistant"}


@pytest.mark.data
def test_official_file_is_read_unchanged(data_root: Path, tmp_path: Path) -> None:
    """A user's official file (a JSON list of instances) loads the same way; ids filter it."""
    record = json.loads((data_root / "longmemeval" / "longmemeval_s_cleaned_e47becba.json").read_text())[0]
    other = dict(record, question_id="zzz_abs", question_type="knowledge-update")
    official = tmp_path / "longmemeval_s_cleaned.json"
    official.write_text(json.dumps([record, other]))
    assert [q.id for q in load_longmemeval(official).questions] == ["e47becba", "zzz_abs"]
    only = load_longmemeval(official, ["zzz_abs"])
    assert [q.id for q in only.questions] == ["zzz_abs"] and only.questions[0].meta["abstention"]
    task = build_task("longmemeval", official)
    assert list(task.scenes) == ["e47becba", "zzz_abs"] and task.n_docs == 1100
    assert task.queries[0].gold_labels == ("answer_280352e9",)


def test_parse_instance_skips_empty_turns_and_keeps_indices() -> None:
    record = {
        "question_id": "q1", "question_type": "multi-session", "question": "Q?", "answer": 3,
        "question_date": "2023/05/30 (Tue) 23:40", "haystack_session_ids": ["s1", "answer_x"],
        "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/21 (Sun) 10:00"],
        "haystack_sessions": [
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "has_answer": True}],
        ],
        "answer_session_ids": ["answer_x"],
    }
    conv, q = parse_instance(record)
    assert [t.id for t in conv.turns()] == ["s1:0", "answer_x:0", "answer_x:1"]
    assert q.evidence == ("answer_x:1",) and q.answer == "3"


@pytest.mark.data
def test_question_index(data_root: Path) -> None:
    index = load_question_index(data_root)
    assert len(index) == 301
    assert {q.id for q in index} == set(read_question_ids(data_root / DEV_IDS_FILE))
    totals = Counter(q.category for q in index)
    abstentions = Counter(q.category for q in index if q.meta["abstention"])
    assert {t: (totals[t], abstentions[t]) for t in DEV_TYPES} == DEV_TYPES
    first = index[0]
    assert (first.id, first.text, first.answer) == ("e47becba", "What degree did I graduate with?",
                                                    "Business Administration")
    assert first.meta["answer_session_ids"] == ["answer_280352e9"]
    assert sum(not q.meta["answer_session_ids"] for q in index) == 14
