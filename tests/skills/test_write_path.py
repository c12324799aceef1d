"""The write path runs the skill bank: segment -> write gate -> controller -> executors -> resolution,
through a real MemoryOS (SQLite, Qdrant edge shard, MiniLM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memsvc.config import Settings, SkillsConfig
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryStatus, MemoryType
from memsvc.ports import MemoryQuery
from memsvc.schemas import MessageIn, WriteRequest
from storage.registry import build_memory_os

T = "tenant"


@pytest.fixture
def os_(tmp_path: Path) -> Iterator[MemoryOS]:
    memory_os = build_memory_os(Settings(data_dir=tmp_path))
    yield memory_os
    memory_os.close()


def msg(mid: str, content: str, *, name: str | None = None, role: str = "user", ts: str = "2023-05-08T13:56:00Z") -> MessageIn:
    return MessageIn.model_validate({"id": mid, "role": role, "name": name, "content": content, "timestamp": ts})


def write(os_: MemoryOS, *messages: MessageIn, user: str = "u", **extra: Any) -> list[dict[str, Any]]:
    return os_.add(T, WriteRequest(user_id=user, messages=list(messages), **extra)).written


def facts(os_: MemoryOS, user: str = "u") -> dict[str, tuple[str, str]]:
    items = os_.list_memories(T, MemoryQuery(user_id=user, types=[MemoryType.SEMANTIC], limit=100)).items
    return {c.content: (c.status.value, c.metadata.get("_slot", "")) for c in items}


def test_one_speakers_new_residence_never_closes_anothers(os_: MemoryOS) -> None:
    write(os_, msg("c1", "I live in Berlin.", name="Caroline", ts="2023-05-01T10:00:00Z"))
    write(os_, msg("m1", "I live in Paris.", name="Melanie", ts="2023-05-02T10:00:00Z"))
    assert facts(os_) == {"Caroline lives in Berlin.": ("active", "caroline/residence"),
                          "Melanie lives in Paris.": ("active", "melanie/residence")}
    write(os_, msg("c2", "I moved to Munich.", name="Caroline", ts="2023-06-01T10:00:00Z"))
    assert facts(os_) == {"Caroline lives in Berlin.": ("superseded", "caroline/residence"),
                          "Melanie lives in Paris.": ("active", "melanie/residence"),
                          "Caroline moved to Munich.": ("active", "caroline/residence")}


def test_the_write_log_says_which_skills_each_span_got_and_what_they_wrote(os_: MemoryOS) -> None:
    written = write(os_, msg("a", "I went hiking yesterday.", name="Ann"), msg("b", "ok", name="Ann"),
                    msg("c", "My favourite tea is sencha.", name="Ann"))
    by_skill: dict[str, list[str]] = {}
    for m in written:
        by_skill.setdefault(os_.get(T, m["id"]).written_by or "", []).append(m["content"])
    assert by_skill == {
        "episodic-turn": ["Ann: I went hiking yesterday.", "Ann: ok", "Ann: My favourite tea is sencha."],
        "capture-events": ["Ann went hiking yesterday (on 7 May 2023)."],
        "capture-preferences": ["Ann's favourite tea is sencha."],
    }
    (event,) = os_.records.events(T, user_id="u", kinds=["write"]).items
    log = event.payload
    # "ok" is phatic: no trigger, no skill. On the favourite the personal-facts trigger matched too
    # (first person); the default controller's policy vetoed it, and kept the preference, whose slot
    # the sentence fills (a slot is never vetoed)
    assert log["selected"] == {"a": ["capture-events", "capture-personal-facts"], "c": ["capture-preferences"]}
    ids = {m["content"]: m["id"] for m in written}
    assert log["skills"]["capture-events"]["written"] == [ids["Ann went hiking yesterday (on 7 May 2023)."]]
    assert log["skills"]["capture-preferences"]["written"] == [ids["Ann's favourite tea is sencha."]]
    # personal facts rewrote "I went hiking yesterday" exactly as the events skill did: resolution kept one
    assert log["skills"]["capture-personal-facts"]["operations"] == 1
    assert log["declined"] == [{"skill": "capture-personal-facts", "source_ids": ["a"], "reason": "repeats a known memory"}]
    assert {s for s in log["skills"]} == {"episodic-turn", "capture-events", "capture-personal-facts", "capture-preferences"}


def test_assistant_steps_and_tool_results_become_procedures(os_: MemoryOS) -> None:
    steps = "1. Open Settings\n2. Tap Wi-Fi\n3. Forget the network"
    written = write(os_, msg("q", "How do I reset the wifi?"), msg("s", steps, role="assistant"),
                    msg("call", "lookup_router(model='AX55')", role="assistant"),
                    msg("res", "AX55: hold the reset button for 10 seconds", role="tool", name="lookup_router"))
    procedures = [(m["content"], m["source_ids"]) for m in written if m["type"] == "procedural"]
    assert procedures == [
        (f"How do I reset the wifi?\n{steps}", ["q", "s"]),
        ("lookup_router(model='AX55')\nlookup_router returned: AX55: hold the reset button for 10 seconds", ["call", "res"]),
    ]


def test_spans_below_the_gate_threshold_keep_only_their_turn(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, skills=SkillsConfig(gate_threshold=1.0))
    memory_os = build_memory_os(settings)
    try:
        written = write(memory_os, msg("a", "I moved to Berlin in May 2023.", name="Ann"))
        assert [m["type"] for m in written] == ["episodic"]
    finally:
        memory_os.close()


def test_every_memory_comes_from_a_card_of_the_bank(os_: MemoryOS) -> None:
    write(os_, msg("a", "I moved to Berlin in May 2023. My sister Anna lives in Rome.", name="Ann"),
          msg("b", "PTO stands for paid time off.", name="Ann"), msg("c", "I'm planning to visit her next month.", name="Ann"))
    cards = {c.id for c in os_.skills()}
    cubes = os_.list_memories(T, MemoryQuery(user_id="u", limit=100)).items
    # the plan ("visit her next month") is a restatement the default controller's policy vetoes: its
    # turn keeps it (the triggers alone, `MEMSVC_SKILLS__CONTROLLER=heuristic`, would write it)
    assert {c.written_by for c in cubes} == {"episodic-turn", "capture-personal-facts", "capture-relationships",
                                             "capture-terminology"}
    assert {c.written_by for c in cubes} <= cards
    assert all(c.status is MemoryStatus.ACTIVE and c.source_ids for c in cubes)


# A slot change under each controller: the new value must close the old one. The learned controller
# vetoes pairs its policy rates low, but never one whose card declares a slot the span fills.
SLOT_CHANGES = [
    ("I live in Berlin.", "I moved to Munich last month.", "ann/residence"),
    ("I work at Siemens.", "I started working at Bosch this week.", "ann/employer"),
    ("My cat is called Miso.", "My cat is called Tofu now.", "ann/name:cat"),
]


@pytest.mark.parametrize("controller", ["heuristic", "learned"])
def test_a_slot_change_closes_the_old_value_under_either_controller(tmp_path: Path, controller: str) -> None:
    memory_os = build_memory_os(Settings(data_dir=tmp_path, skills=SkillsConfig(controller=controller)))  # type: ignore[arg-type]
    try:
        for i, (before, after, _) in enumerate(SLOT_CHANGES):
            write(memory_os, msg(f"b{i}", before, name="Ann", ts="2023-05-01T10:00:00Z"))
            write(memory_os, msg(f"a{i}", after, name="Ann", ts="2023-06-01T10:00:00Z"))
        by_slot: dict[str, list[str]] = {}
        for status, key in facts(memory_os).values():
            by_slot.setdefault(key, []).append(status)
        assert {slot: sorted(by_slot.get(slot, [])) for _, _, slot in SLOT_CHANGES} == {
            slot: ["active", "superseded"] for _, _, slot in SLOT_CHANGES}
    finally:
        memory_os.close()
