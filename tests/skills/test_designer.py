"""The designer: hard cases, trigger proposals scored on a design table, kept changes versioned."""

from __future__ import annotations

from pathlib import Path

from memsvc.skills import SkillCard, load_skill_bank
from memsvc.skills.designer import (
    DesignTable,
    budget_recall,
    design,
    hard_cases,
    narrowed_triggers,
    propose_words,
    score,
    split_by_scene,
)

CARD = """---
id: capture-notes
version: 1
operations: [INSERT]
target_types: [semantic]
executor: offline
handler: statements
selection: controller
roles: [user]
parameters:
  trigger: '\\balpha\\b'
---
## Purpose
Notes.

## When to use
Alpha messages.

## How to apply
Keep them.

## Constraints
None.
"""


def table() -> DesignTable:
    """Four spans whose memory a question needs (three the trigger misses: "zeta ..."), three it
    rightly skips; one question per needed span whose turn itself is ranked below 500 words of noise."""
    texts = ["zeta one", "zeta two", "zeta three", "alpha four", "beta five", "beta six", "beta seven"]
    labels = [True, True, True, True, False, False, False]
    queries = []
    for i in range(4):
        queries.append({
            "group": "t/s", "gold": [f"m{i}"], "ids": ["noise", f"d{i}", f"turn{i}"], "credited": [[], [f"m{i}"], [f"m{i}"]],
            "words": [480, 10, 25], "episodic": [True, False, True], "sources": [["n"], [f"m{i}"], [f"m{i}"]],
        })
    return DesignTable(
        pair_skill=["capture-notes"] * 7, pair_span=list(range(7)), pair_label=labels, pair_cost=[1.0] * 7,
        pair_memories=[[f"d{i}"] for i in range(7)], span_role=["user"] * 7, span_text=texts,
        span_key=[f"t/s|m{i}" for i in range(7)], queries=queries, lam=0.05, budget=500, source={"test": True},
    )


def test_budget_recall_counts_evidence_within_the_budget_only() -> None:
    q = table().queries[0]
    assert budget_recall(q, {"d0"}, 500) == 1.0  # the short derived memory fits after the noise
    assert budget_recall(q, set(), 500) == 0.0  # without it the turn falls outside the budget
    assert budget_recall(q, set(), 505) == 1.0


def test_hard_cases_and_proposed_words(tmp_path: Path) -> None:
    cards = load_skill_bank_from_text(tmp_path)
    hard = hard_cases(table(), cards)
    assert (hard.questions, hard.missed_pairs) == (3, {"capture-notes": [0, 1, 2]})
    assert propose_words(["zeta one is here", "zeta two", "zeta three"], ["beta five", "beta six"]) == ["zeta"]


def load_skill_bank_from_text(folder: Path) -> list[SkillCard]:
    (folder / "capture-notes.md").write_text(CARD)
    return load_skill_bank(folder)


def test_a_change_that_improves_the_score_is_kept_versioned_and_recorded(tmp_path: Path) -> None:
    cards = load_skill_bank_from_text(tmp_path)
    t = table()
    assert score(t, cards) == {"WR": 0.25, "cost_share": 0.14286, "reward": 0.24286}
    report = design(t, cards, bank_dir=tmp_path, max_changes=2)
    assert [(k["skill"], k["version"], k["change"]) for k in report["kept"]] == [("capture-notes", 2, "trigger += ['zeta']")]
    assert report["score_after"] == {"WR": 1.0, "cost_share": 0.57143, "reward": 0.97143}
    reloaded = load_skill_bank(tmp_path)[0]
    assert reloaded.version == 2 and reloaded.parameters["trigger"] == "\\balpha\\b|\\b(?:zeta)\\b"
    assert [(h["version"], h["score_before"], h["score_after"]) for h in reloaded.history] == [(2, 0.24286, 0.97143)]
    again = design(t, load_skill_bank(tmp_path), bank_dir=tmp_path)
    assert again["kept"] == [] and load_skill_bank(tmp_path)[0].version == 2  # nothing left to gain: no change


def test_narrowed_triggers_drop_one_alternative_at_a_time() -> None:
    assert narrowed_triggers(r"\b(?:going to|gonna|plan)\b") == [
        (r"\b(?:gonna|plan)\b", "going to"), (r"\b(?:going to|plan)\b", "gonna"), (r"\b(?:going to|gonna)\b", "plan")]
    # parentheses inside a character class do not nest: three alternatives
    assert narrowed_triggers(r"\bmy\b|[(]x|y[)]") == [
        (r"[(]x|y[)]", r"\bmy\b"), (r"\bmy\b|y[)]", "[(]x"), (r"\bmy\b|[(]x", "y[)]")]
    assert narrowed_triggers(r"\bonly\b") == []


def two_scenes(helpful: str, harmful: str) -> DesignTable:
    """Scene `helpful` as `table()` (its "zeta" spans' memories are needed); in scene `harmful` the
    "zeta" spans' memories are never needed, so firing on them only costs."""
    base = table()
    texts = base.span_text + ["zeta eight", "zeta nine", "zeta ten", "zeta eleven", "zeta twelve", "zeta thirteen"]
    keys = [f"{helpful}|m{i}" for i in range(7)] + [f"{harmful}|m{i}" for i in range(6)]
    queries = [{**q, "group": helpful} for q in base.queries]
    queries.append({"group": harmful, "gold": ["x"], "ids": ["tx"], "credited": [["x"]], "words": [10],
                    "episodic": [True], "sources": [["x"]]})
    n = len(texts)
    return DesignTable(
        pair_skill=["capture-notes"] * n, pair_span=list(range(n)), pair_label=base.pair_label + [False] * 6,
        pair_cost=[1.0] * n, pair_memories=[[f"d{i}"] for i in range(n)], span_role=["user"] * n, span_text=texts,
        span_key=keys, queries=queries, lam=0.05, budget=500, source={"test": True},
    )


def test_a_change_that_lowers_the_held_out_scenes_score_is_not_kept(tmp_path: Path) -> None:
    split = split_by_scene(two_scenes("t/a", "t/b"), 0.3)
    assert split is not None
    held_scene = split[1].queries[0]["group"]
    design_scene = "t/a" if held_scene == "t/b" else "t/b"
    # the held-out scene is the one where "zeta" memories are never needed: the change is refused
    report = design(two_scenes(design_scene, held_scene), load_skill_bank_from_text(tmp_path), bank_dir=tmp_path)
    assert report["scenes"] == {"design": 1, "held_out": 1} and report["kept"] == []
    assert any(r.get("why") == "the held-out scenes' score fell" for r in report["rejected"])
    assert load_skill_bank(tmp_path)[0].version == 1
    # when the held-out scene needs its "zeta" memories too, the change is kept, with both figures
    alike = two_scenes(design_scene, held_scene)
    alike.pair_label = alike.pair_label[:7] + [True] * 6
    for i in range(6):
        alike.queries.append({"group": held_scene, "gold": [f"h{i}"], "ids": ["noise", f"d{7 + i}", f"turnh{i}"],
                              "credited": [[], [f"h{i}"], [f"h{i}"]], "words": [480, 10, 25],
                              "episodic": [True, False, True], "sources": [["n"], [f"h{i}"], [f"h{i}"]]})
    kept = design(alike, load_skill_bank(tmp_path), bank_dir=tmp_path)
    assert [k["change"] for k in kept["kept"]] == ["trigger += ['zeta']"]
    assert kept["kept"][0]["held_out_after"] > kept["kept"][0]["held_out_before"]


def test_a_single_scene_table_is_scored_in_sample() -> None:
    assert split_by_scene(table(), 0.3) is None
    assert split_by_scene(two_scenes("t/a", "t/b"), 0.0) is None
