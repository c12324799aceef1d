"""The runner: what it writes, how it maps results back to documents, and how it scores them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from evals.runner import RunOptions, run_system, scope_id, summarise, system_summary, to_hits, write_batches
from evals.tasks import Doc, Query, Task
from memsvc.schemas import SearchRequest, SearchResult, WriteRequest, WriteResult

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


class ScriptedClient:
    """Records requests; answers searches from a script keyed by query text."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.writes: list[WriteRequest] = []
        self.searches: list[SearchRequest] = []
        self.answers = answers

    def add(self, req: WriteRequest) -> WriteResult:
        self.writes.append(req)
        return WriteResult(written=[{"id": m.id} for m in req.messages], skipped=[])

    def search(self, req: SearchRequest) -> SearchResult:
        self.searches.append(req)
        return SearchResult(results=self.answers.get(req.query, []), context="")

    def close(self) -> None:
        pass


def _task() -> Task:
    docs = (
        Doc("D1:1", "Hey Mel! Good to see you!", "Caroline", timestamp=T0, session="session_1"),
        Doc("D1:2", "I went to a LGBTQ support group yesterday and it was so powerful.", "Caroline",
            timestamp=T0, session="session_1"),
        Doc("D2:1", "I love painting sunsets at the lake with my kids.", "Melanie", timestamp=T0, session="session_2"),
    )
    queries = (
        Query("q1", "conv-a", "support group?", "single_hop", ("D1:2",)),
        Query("q2", "conv-a", "painting?", "adversarial", ("D2:1", "D1:1")),
    )
    return Task("toy", "dialogue", {"conv-a": docs, "conv-b": docs[:1]}, queries, main_categories=("single_hop",))


def test_write_batches_split_at_sessions_and_size() -> None:
    docs = [Doc(str(i), "x", session="s1" if i < 5 else "s2") for i in range(8)]
    assert [[d.id for d in b] for b in write_batches(docs, 3)] == [["0", "1", "2"], ["3", "4"], ["5", "6", "7"]]


def test_scope_ids_are_valid_user_ids() -> None:
    assert scope_id("tmd", "time_qs/a b", "r1") == "tmd-time_qs_a_b-r1"


def test_run_writes_each_scene_in_order_with_ids_names_and_times() -> None:
    client = ScriptedClient({})
    run_system(_task(), "scripted", client, RunOptions(run_id="r1", progress=False))
    assert [(w.user_id, w.session_id, [m.id for m in w.messages]) for w in client.writes] == [
        ("toy-conv-a-r1", "session_1", ["D1:1", "D1:2"]),
        ("toy-conv-a-r1", "session_2", ["D2:1"]),
        ("toy-conv-b-r1", "session_1", ["D1:1"]),
    ]
    msg = client.writes[0].messages[1]
    assert (msg.role, msg.name, msg.timestamp, msg.content) == ("user", "Caroline", T0, _task().scenes["conv-a"][1].content)
    assert all(w.infer for w in client.writes)
    assert [(s.user_id, s.query, s.top_k) for s in client.searches] == [
        ("toy-conv-a-r1", "support group?", 100), ("toy-conv-a-r1", "painting?", 100)]


def test_hits_ranked_by_score_and_credited_only_for_stated_sources() -> None:
    docs = {d.id: d for d in _task().scenes["conv-a"]}
    results = [
        {"id": "m1", "type": "episodic", "content": "Caroline: Hey Mel! Good to see you!", "source_ids": ["D1:1"],
         "score": 0.2},
        {"id": "m2", "type": "semantic", "score": 0.9,
         "content": "Caroline attended an LGBTQ support group on 7 May 2023 and likes painting.",
         "source_ids": ["D1:2", "D2:1", "D9:9"]},
    ]
    hits = to_hits(results, docs)
    assert [h.id for h in hits] == ["m2", "m1"]
    assert hits[0].credited == ("D1:2",)  # D2:1 shares one content word (paint), D9:9 is unknown
    assert hits[1].credited == ("D1:1",)
    assert hits[0].words == 13


def test_scores_and_summary() -> None:
    answers = {
        "support group?": [
            {"id": "x", "content": "Melanie: I love painting sunsets at the lake with my kids.", "source_ids": ["D2:1"],
             "score": 2.0},
            {"id": "y", "content": "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
             "source_ids": ["D1:2"], "score": 1.0},
        ],
        "painting?": [],
    }
    task = _task()
    run = run_system(task, "scripted", ScriptedClient(answers), RunOptions(run_id="r", progress=False))
    first, second = run.items
    assert first["metrics"]["ER@5"] == 1.0 and first["metrics"]["R@1"] == 0.0 and first["metrics"]["R@5"] == 1.0
    assert first["metrics"]["WR@250"] == 1.0 and first["first_rank"] == {"D1:2": 2}
    assert first["top"][0] == {"id": "x", "type": "None", "credited": ["D2:1"], "uncredited": []}
    assert second["metrics"]["ER@20"] == 0.0 and second["n_results"] == 0
    summary = summarise(run.items, task.main_categories)
    assert summary["headline"]["n"] == 1 and summary["all"]["n"] == 2
    assert summary["headline"]["metrics"]["ER@10"] == 1.0 and summary["all"]["metrics"]["ER@10"] == 0.5
    assert summary["by_category"]["adversarial"]["metrics"]["ER@10"] == 0.0
    full = system_summary(run, task)
    assert full["write"]["messages"] == 4 and full["latency_ms"]["n"] == 2


def test_session_level_labels() -> None:
    docs = (Doc("s1:0", "a b c"), Doc("s1:1", "d e f"), Doc("answer_x:0", "g h i"))
    query = Query("q", "all", "q?", "multi-session", ("answer_x:0",), gold_labels=("answer_x",))
    task = Task("lme", "dialogue", {"all": docs}, (query,), label_of=lambda d: d.rsplit(":", 1)[0])
    answers = {"q?": [{"id": "1", "content": "d e f", "source_ids": ["s1:1"], "score": 3},
                      {"id": "2", "content": "a b c", "source_ids": ["s1:0"], "score": 2},
                      {"id": "3", "content": "g h i", "source_ids": ["answer_x:0"], "score": 1}]}
    (item,) = run_system(task, "s", ScriptedClient(answers), RunOptions(progress=False)).items
    assert item["metrics"]["R@1"] == 0.0 and item["metrics"]["R@5"] == 1.0
    assert item["metrics"]["session_R@1"] == 0.0 and item["metrics"]["session_R@5"] == 1.0
    assert item["metrics"]["session_nDCG@10"] == 0.6309297535714575  # 1 / log2(3): second in [s1, answer_x]


def test_report_table_with_differences() -> None:
    from evals.report import metric_table

    rows = {"memsvc": {"ER@10": 0.5, "nDCG@10": 0.25}, "bm25": {"ER@10": 0.375}}
    assert metric_table(rows, ("ER@5", "ER@10", "nDCG@10"), "memsvc") == [
        "| system | ER@10 | nDCG@10 |",
        "| --- | ---: | ---: |",
        "| memsvc | 50.0 | 25.0 |",
        "| bm25 | 37.5 | – |",
        "| Δ memsvc − bm25 | +12.5 | – |",
    ]
