"""Each loader on the shared development files, against the counts in ../shared/data/README.md."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evals.datasets.base import parse_datetime
from evals.datasets.hipporag import load_hotpotqa, load_musique
from evals.datasets.knowmebench import load_knowmebench
from evals.datasets.locomo import load_locomo, normalise_evidence
from evals.datasets.procedural import load_gorilla, load_proced_mem_bench, load_reme, load_toolbench
from evals.datasets.realtalk import load_realtalk, normalise_ref
from evals.datasets.tmd import load_tmd


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("10:04 am on 19 December, 2023", datetime(2023, 12, 19, 10, 4, tzinfo=UTC)),
        ("2:36 AM on 21 February, 2023", datetime(2023, 2, 21, 2, 36, tzinfo=UTC)),
        ("02:36:05 AM on Tuesday 21 February, 2023", datetime(2023, 2, 21, 2, 36, 5, tzinfo=UTC)),
        ("29.12.2023, 22:42:04", datetime(2023, 12, 29, 22, 42, 4, tzinfo=UTC)),
        ("1969-08-15 14:00:00", datetime(1969, 8, 15, 14, 0, tzinfo=UTC)),
        ("2023/05/20 (Sat) 02:21", datetime(2023, 5, 20, 2, 21, tzinfo=UTC)),
        ("2023-05-30T00:00:00+00:00", datetime(2023, 5, 30, tzinfo=UTC)),
        ("", None),
        ("not a date", None),
    ],
)
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_locomo_evidence_normalisation() -> None:
    assert normalise_evidence(["D8:6; D9:17"]) == ("D8:6", "D9:17")
    assert normalise_evidence(["D:11:26", "D1:3", "D1:3"]) == ("D11:26", "D1:3")
    assert normalise_evidence(["D"]) == ()


LOCOMO_ROWS = [  # sample_id, sessions, turns, turns with image, QA, cat1..cat5
    ("conv-26", 19, 419, 77, 199, (32, 37, 13, 70, 47)),
    ("conv-30", 19, 369, 30, 105, (11, 26, 0, 44, 24)),
    ("conv-41", 32, 663, 77, 193, (31, 27, 8, 86, 41)),
    ("conv-42", 29, 629, 80, 260, (37, 40, 11, 111, 61)),
    ("conv-43", 29, 680, 123, 242, (31, 26, 14, 107, 64)),
    ("conv-44", 28, 675, 149, 158, (30, 24, 7, 62, 35)),
    ("conv-47", 31, 689, 81, 190, (20, 34, 13, 83, 40)),
]


@pytest.mark.data
def test_locomo_counts(data_root: Path) -> None:
    ds = load_locomo(data_root)
    assert [c.id for c in ds.conversations] == [r[0] for r in LOCOMO_ROWS]
    for conv, (sid, sessions, turns, images, qa, cats) in zip(ds.conversations, LOCOMO_ROWS, strict=True):
        all_turns = list(conv.turns())
        assert (len(conv.sessions), len(all_turns)) == (sessions, turns), sid
        assert sum(t.meta["image"] for t in all_turns) == images
        assert len({t.id for t in all_turns}) == turns
        qs = [q for q in ds.questions if q.scene == sid]
        assert len(qs) == qa
        numbers = Counter(q.meta["category_number"] for q in qs)
        assert tuple(numbers[i] for i in range(1, 6)) == cats
    assert len(ds.questions) == 1347
    first = ds.conversations[0].sessions[0]
    assert first.timestamp == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert first.turns[0].speaker == "Caroline" and first.turns[0].id == "D1:1"
    assert ds.questions[0].answer == "7 May 2023" and ds.questions[0].evidence == ("D1:3",)


REALTALK_ROWS = [  # conversation, sessions, messages, QA, cat1, cat2, cat3, evidence refs, unmatched
    ("Chat_1_Emi_Elise", 18, 476, 70, 30, 30, 10, 172, 29),
    ("Chat_2_Kevin_Elise", 22, 453, 73, 30, 31, 12, 131, 3),
    ("Chat_3_Kevin_Paola", 21, 422, 71, 30, 30, 11, 166, 2),
    ("Chat_4_Emi_Paola", 20, 410, 70, 30, 30, 10, 173, 1),
    ("Chat_6_Vanessa_Nicolas", 25, 1511, 70, 30, 30, 10, 118, 17),
    ("Chat_7_Nebraas_Vanessa", 25, 1162, 72, 30, 30, 12, 135, 6),
    ("Chat_9_Fahim_Akib", 22, 1256, 70, 30, 31, 9, 174, 38),
]


@pytest.mark.data
def test_realtalk_counts(data_root: Path) -> None:
    ds = load_realtalk(data_root)
    for conv, row in zip(ds.conversations, REALTALK_ROWS, strict=True):
        name, sessions, messages, qa, c1, c2, c3, refs, unmatched = row
        assert conv.id == name
        ids = {t.id for t in conv.turns()}
        assert (len(conv.sessions), len(list(conv.turns())), len(ids)) == (sessions, messages, messages)
        qs = [q for q in ds.questions if q.scene == name]
        cats = Counter(q.category for q in qs)
        assert (len(qs), cats["multi_hop"], cats["temporal_reasoning"], cats["commonsense"]) == (qa, c1, c2, c3)
        raw = [r for q in qs for r in q.meta["raw_evidence"]]
        assert len(raw) == refs
        assert sum(normalise_ref(r) not in ids for r in raw) == unmatched
    assert len(ds.questions) == 496
    assert ds.conversations[0].sessions[0].turns[0].timestamp == datetime(2023, 12, 29, 22, 42, 4, tzinfo=UTC)


TMD_CONVERSATIONS = {"28": (20, 552), "31": (20, 484), "41": (33, 676), "42": (30, 642),
                     "43": (30, 693), "44": (29, 688), "45": (31, 715), "47": (32, 702)}
TMD_FILES = {  # category: items, paraphrases, mean relevant turns per item
    "ambiguous_time_qs/date_span": (120, 720, 69.9), "ambiguous_time_qs/dates": (225, 1350, 22.9),
    "ambiguous_time_qs/day_span": (16, 72, 55.3), "ambiguous_time_qs/earlier_today": (8, 24, 21.2),
    "ambiguous_time_qs/last_named_day": (8, 24, 26.5), "ambiguous_time_qs/month": (68, 204, 75.8),
    "ambiguous_time_qs/rel_day": (209, 627, 23.3), "ambiguous_time_qs/rel_month": (68, 188, 75.8),
    "ambiguous_time_qs/rel_session": (225, 683, 22.9), "ambiguous_time_qs/session": (201, 1206, 23.2),
    "ambiguous_time_qs/session_span": (177, 708, 68.5), "content_time_qs/content_time_qs": (149, 149, 1.0),
    "time_qs/date_span": (120, 1440, 69.9), "time_qs/dates": (225, 2700, 22.9),
    "time_qs/day_span": (16, 72, 55.3), "time_qs/earlier_today": (8, 24, 21.2),
    "time_qs/last_named_day": (8, 24, 26.5), "time_qs/month": (68, 204, 75.8),
    "time_qs/rel_day": (217, 643, 23.7), "time_qs/rel_month": (68, 180, 75.8),
    "time_qs/rel_session": (225, 691, 22.9), "time_qs/session": (201, 1206, 23.2),
    "time_qs/session_span": (177, 708, 68.5),
}


@pytest.mark.data
def test_tmd_counts(data_root: Path) -> None:
    first, every = load_tmd(data_root), load_tmd(data_root, paraphrases="all")
    for conv in first.conversations:
        assert (len(conv.sessions), len(list(conv.turns()))) == TMD_CONVERSATIONS[conv.id]
    items, paraphrases = Counter(q.category for q in first.questions), Counter(q.category for q in every.questions)
    assert set(items) == set(TMD_FILES)
    for category, (n_items, n_para, mean_rel) in TMD_FILES.items():
        assert (items[category], paraphrases[category]) == (n_items, n_para), category
        rel = [len(q.evidence) for q in first.questions if q.category == category]
        assert round(sum(rel) / len(rel), 1) == mean_rel
    ambiguous = next(q for q in first.questions if q.category == "ambiguous_time_qs/session")
    assert ambiguous.text.startswith("Tara: I see in my calendar")
    turn = first.conversations[0].sessions[0].turns[1]
    assert (turn.id, turn.timestamp) == ("1", datetime(2023, 2, 21, 2, 36, 12, tzinfo=UTC))


KNOWME_ROWS = {  # (dataset, task slug): questions, with evidence, evidence refs, refs to absent ids
    ("dataset1", "adversarial_abstention"): (70, 70, 103, 0),
    ("dataset1", "expert_annotated_psychoanalysis"): (43, 0, 0, 0),
    ("dataset1", "information_extraction"): (91, 91, 91, 1),
    ("dataset1", "logical_event_ordering"): (36, 0, 0, 0),
    ("dataset1", "mind_body_interaction"): (206, 206, 636, 5),
    ("dataset1", "mnestic_trigger_analysis"): (168, 168, 213, 23),
    ("dataset1", "temporal_reasoning"): (92, 92, 238, 19),
    ("dataset3", "adversarial_abstention"): (70, 70, 211, 0),
    ("dataset3", "expert_annotated_psychoanalysis"): (32, 0, 0, 0),
    ("dataset3", "information_extraction"): (70, 70, 74, 0),
    ("dataset3", "logical_event_ordering"): (18, 0, 0, 0),
    ("dataset3", "mind_body_interaction"): (70, 70, 170, 0),
    ("dataset3", "mnestic_trigger_analysis"): (140, 140, 326, 0),
    ("dataset3", "temporal_reasoning"): (140, 70, 211, 0),
}


@pytest.mark.data
def test_knowmebench_counts(data_root: Path) -> None:
    ds = load_knowmebench(data_root)
    assert {k: len(v) for k, v in ds.corpus.items()} == {"dataset1": 6644, "dataset3": 8423}
    for (scene, task), (n, with_ev, refs, absent) in KNOWME_ROWS.items():
        ids = {d.id for d in ds.corpus[scene]}
        qs = [q for q in ds.questions if q.scene == scene and q.category == task]
        assert len(qs) == n, (scene, task)
        assert sum(bool(q.evidence) for q in qs) == with_ev
        assert sum(len(q.evidence) for q in qs) == refs
        assert sum(e not in ids for q in qs for e in q.evidence) == absent
    doc = ds.corpus["dataset1"][0]
    assert doc.title == "1969-08-15 14:00:00 Rocky path" and doc.text.startswith("I saw a bus coming toward me.")


@pytest.mark.data
def test_proced_mem_bench_counts(data_root: Path) -> None:
    ds = load_proced_mem_bench(data_root)
    assert len(ds.corpus["all"]) == 336
    ids = {d.id for d in ds.corpus["all"]}
    for tier, (n, rel, high) in {"easy": (10, 214, 56), "medium": (10, 221, 77), "hard": (8, 157, 32)}.items():
        qs = [q for q in ds.questions if q.category == tier]
        assert (len(qs), sum(len(q.evidence) for q in qs)) == (n, rel)
        assert sum(g >= 9 for q in qs for g in q.meta["grades"].values()) == high
        assert all(e in ids for q in qs for e in q.evidence)


@pytest.mark.data
def test_reme_counts(data_root: Path) -> None:
    ds = load_reme(data_root)
    rows = {"appworld_qwen3_14b": (147, 102), "appworld_qwen3_32b": (132, 76), "appworld_qwen3_8b": (140, 84),
            "bfcl_qwen3_14b": (78, 74), "bfcl_qwen3_32b": (69, 69), "bfcl_qwen3_8b": (67, 67)}
    kinds = {"appworld_qwen3_14b": (27, 100, 20), "bfcl_qwen3_8b": (31, 31, 5)}
    for ws, (memories, task_queries) in rows.items():
        assert len(ds.corpus[ws]) == memories
        qs = [q for q in ds.questions if q.scene == ws]
        assert sum(q.category == "generalized_query" for q in qs) == memories
        assert sum(q.category == "task_query" for q in qs) == task_queries
        assert sum(len(q.evidence) for q in qs if q.category == "task_query") == memories
        if ws in kinds:
            c = Counter(q.meta["kind"] for q in qs if q.category == "generalized_query")
            assert (c["success"], c["failure"], c["comparative"]) == kinds[ws]


@pytest.mark.data
def test_gorilla_counts(data_root: Path) -> None:
    ds = load_gorilla(data_root)
    rows = {"huggingface": (936, 638, 586), "tensorflowhub": (696, 482, 482), "torchhub": (94, 130, 130)}
    for hub, (apis, evals, exact) in rows.items():
        assert len(ds.corpus[hub]) == apis
        qs = [q for q in ds.questions if q.scene == hub]
        assert len(qs) == evals
        assert sum(q.meta["exact_match"] for q in qs) == exact
        assert all(q.evidence for q in qs)
    assert ds.questions[0].text.startswith("Design a feature for a social media website")


@pytest.mark.data
def test_toolbench_counts(data_root: Path) -> None:
    ds = load_toolbench(data_root)
    assert len(ds.corpus["all"]) == 1951
    rows = {"G1_instruction": (114, 581, 2.27), "G1_category": (107, 312, 2.11), "G1_tool": (111, 405, 2.27),
            "G2_instruction": (74, 450, 2.49), "G2_category": (87, 328, 2.40), "G3_instruction": (43, 44, 3.05)}
    for group, (n, apis, mean_rel) in rows.items():
        qs = [q for q in ds.questions if q.category == group]
        assert len(qs) == n
        assert len({c for q in qs for c in q.meta["candidates"]}) == apis
        assert round(sum(q.meta["relevant_pairs"] for q in qs) / n, 2) == mean_rel  # as listed (a few repeat)
        assert all(set(q.evidence) <= set(q.meta["candidates"]) for q in qs)


@pytest.mark.data
def test_hipporag_counts(data_root: Path) -> None:
    musique = load_musique(data_root)
    assert len(musique.corpus["all"]) == 1890 and len(musique.questions) == 100
    assert Counter(q.category for q in musique.questions) == {"2hop": 68, "3hop": 27, "4hop": 5}
    assert all(2 <= len(q.evidence) <= 4 for q in musique.questions)
    hotpot = load_hotpotqa(data_root)
    assert len(hotpot.corpus["all"]) == 994 and len(hotpot.questions) == 100
    titles = {d.id for d in hotpot.corpus["all"]}
    assert all(set(q.evidence) <= titles for q in hotpot.questions)
