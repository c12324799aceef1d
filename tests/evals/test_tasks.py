"""LMEB-style tasks: qrels restricted to existing documents, balanced selection, LMEB file layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.datasets.base import Conversation, Dataset, Question, Session, Turn
from evals.tasks import Query, build_task, conversation_task, select_queries, write_lmeb


def _dataset() -> Dataset:
    def conv(cid: str) -> Conversation:
        turns = tuple(Turn(f"D1:{i}", f"text {cid} {i}", speaker="A" if i % 2 else "B") for i in range(1, 4))
        return Conversation(cid, (Session("session_1", None, turns),), ("A", "B"))

    questions = (
        Question("c1:q0", "c1", "first?", "single_hop", ("D1:1", "D9:9")),
        Question("c1:q1", "c1", "second?", "multi_hop", ("D1:2", "D1:3")),
        Question("c1:q2", "c1", "none?", "single_hop", ()),
        Question("c2:q0", "c2", "third?", "single_hop", ("D1:3",)),
    )
    return Dataset("toy", questions, conversations=(conv("c1"), conv("c2")))


def test_conversation_task_filters_qrels() -> None:
    task = conversation_task(_dataset())
    assert list(task.scenes) == ["c1", "c2"] and task.n_docs == 6
    assert [q.id for q in task.queries] == ["c1:q0", "c1:q1", "c2:q0"]
    assert task.queries[0].gold == ("D1:1",)
    assert task.dropped == {"evidence ids naming no document (removed from qrels)": 1,
                            "queries without evidence (not scored)": 1}
    assert task.scenes["c1"][0].speaker == "A" and task.scenes["c1"][0].session == "session_1"


def test_select_round_robin_over_scene_and_category() -> None:
    qs = [Query(f"{s}{c}{i}", s, "t", c, ("x",)) for s in "ab" for c in "xy" for i in range(3)]
    picked = select_queries(qs, 5)
    assert [q.id for q in picked] == ["ax0", "ax1", "ay0", "bx0", "by0"]
    assert select_queries(qs, None) == qs and select_queries(qs, 100) == qs


def test_select_keeps_only_needed_scenes() -> None:
    task = conversation_task(_dataset()).select(limit=1)
    assert [q.id for q in task.queries] == ["c1:q0"] and list(task.scenes) == ["c1"]
    assert "selection: 1 of 3 queries" in task.notes[-1]
    assert list(conversation_task(_dataset()).select(max_scenes=1).scenes) == ["c1"]


def test_write_lmeb_layout(tmp_path: Path) -> None:
    write_lmeb(conversation_task(_dataset()), tmp_path)
    corpus = [json.loads(x) for x in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(x) for x in (tmp_path / "queries.jsonl").read_text().splitlines()]
    assert corpus[0] == {"id": "scene_0_D1:1", "title": "", "text": "A: text c1 1"}
    assert [q["id"] for q in queries] == ["scene_0_q_0", "scene_0_q_1", "scene_1_q_2"]
    assert (tmp_path / "qrels.tsv").read_text().splitlines() == [
        "scene_0_q_0\tscene_0_D1:1\t1", "scene_0_q_1\tscene_0_D1:2\t1", "scene_0_q_1\tscene_0_D1:3\t1",
        "scene_1_q_2\tscene_1_D1:3\t1"]
    candidates = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert candidates[1] == {"scene_id": "scene_1", "candidate_doc_ids": ["scene_1_D1:1", "scene_1_D1:2", "scene_1_D1:3"]}


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "memory_type", "scenes", "docs", "queries"),
    [
        ("locomo", "dialogue", 7, 4124, 1345),
        ("realtalk", "dialogue", 7, 5690, 483),
        ("tmd", "dialogue", 8, 5152, 2807),
        ("longmemeval", "dialogue", 1, 550, 1),
        ("knowmebench", "episodic", 2, 15067, 1022),
        ("proced_mem_bench", "procedural", 1, 336, 28),
        ("reme", "procedural", 6, 633, 1105),
        ("gorilla", "procedural", 3, 1726, 1250),
        ("toolbench", "procedural", 1, 1951, 536),
        ("musique", "semantic", 1, 1890, 100),
        ("hotpotqa", "semantic", 1, 994, 100),
    ],
)
def test_benchmark_tasks(data_root: Path, name: str, memory_type: str, scenes: int, docs: int, queries: int) -> None:
    task = build_task(name, data_root)
    assert (task.memory_type, len(task.scenes), task.n_docs, len(task.queries)) == (memory_type, scenes, docs, queries)
    for q in task.queries:
        ids = {d.id for d in task.scenes[q.scene]}
        assert q.gold or q.gold_labels
        assert set(q.gold) <= ids
        assert len(ids) == len(task.scenes[q.scene])  # message ids unique in a scope
