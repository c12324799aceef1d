"""The offline skill bank on sentences with known output: each card's executor, run by the runtime
with the card's own parameters from `skills/`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from memsvc.config import SkillsConfig
from memsvc.models import Role
from memsvc.skills import SkillCard, load_skill_bank
from memsvc.skills.controller import AllSkillsController, TriggerController
from memsvc.skills.registry import default_executors
from memsvc.skills.runtime import RuntimeRun, SkillRuntime
from memsvc.skills.types import OpKind, SkillContext, Span

BANK = Path(__file__).resolve().parents[2] / "skills"
MONDAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # a Monday afternoon


@pytest.fixture(scope="module")
def cards() -> list[SkillCard]:
    return load_skill_bank(BANK)


def run_skill(cards: list[SkillCard], skill: str, turns: list[tuple[str | None, str]], *, role: Role = Role.USER,
              roles: list[Role] | None = None, when: datetime = MONDAY) -> list[tuple[str, str | None, str | None, tuple[str, ...]]]:
    """(content, slot, event date, sources) of what `skill` writes for these turns."""
    runtime = SkillRuntime(cards, default_executors(None, SkillsConfig()), AllSkillsController())
    spans = [Span(f"m{i}", (roles or [role] * len(turns))[i], text, when, name=name, index=i)
             for i, (name, text) in enumerate(turns)]
    run = RuntimeRun()
    runtime.derive(spans, np.zeros((len(spans), 4), np.float32), [True] * len(spans), run,
                   SkillContext(spans=spans), only=[skill])
    return [(op.content, op.slot, op.event_time.date().isoformat() if op.event_time else None, op.source_ids)
            for op in run.operations if op.skill == skill]


def test_facts_of_every_speaker_keyed_by_subject(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-personal-facts", [
        ("Caroline", "I moved to Berlin in May 2023."),
        ("Melanie", "I live in Paris now. Do you still work at the museum?"),
        (None, "My cat is called Miso"),
        ("Melanie", "Caroline works at the library."),
    ])
    assert out == [
        ("Caroline moved to Berlin in May 2023.", "caroline/residence", "2023-05-01", ("m0",)),
        ("Melanie lives in Paris now.", "melanie/residence", None, ("m1",)),
        ("User's cat is called Miso.", "name:cat", None, ("m2",)),
        ("Caroline works at the library.", "caroline/employer", None, ("m3",)),
    ]


def test_facts_skip_questions_greetings_preferences_and_the_speakers_own_name(cards: list[SkillCard]) -> None:
    assert run_skill(cards, "capture-personal-facts", [
        ("Alice", "Do you live in Berlin?"), ("Alice", "Hey Mel! Good to see you!"),
        ("Alice", "I love living in Berlin."), ("Alice", "Alice went home."), ("Alice", "Thanks went well."),
    ]) == []


def test_facts_state_the_date_a_relative_time_meant(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-personal-facts", [("Alice", "I moved to Paris last week.")])
    assert out == [("Alice moved to Paris last week (in the week of 1 May 2023).", "alice/residence", "2023-05-01", ("m0",))]


def test_preferences_of_any_speaker_with_subject_slots(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-preferences", [
        ("Bob", "My favorite color is blue. I love hiking!"), ("Melanie", "Caroline loves pottery."),
        ("Bob", "Do you like jazz?"),
    ])
    assert out == [
        ("Bob's favorite color is blue.", "bob/favorite color", None, ("m0",)),
        ("Bob loves hiking!", None, None, ("m0",)),
        ("Caroline loves pottery.", None, None, ("m1",)),
    ]


def test_events_get_the_date_resolved_from_the_message_time(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-events", [
        ("Caroline", "I went to a support group yesterday and it was so powerful."),
        ("Melanie", "We ran a charity race last Saturday."),
        ("Melanie", "I painted that lake sunrise two weeks ago!"),
        ("Melanie", "I'm going to the beach next month."),  # future: a plan, not an event
        ("Caroline", "I recently started a new job."),  # cannot be dated
    ])
    assert out == [
        ("Caroline went to a support group yesterday (on 7 May 2023) and it was so powerful.", None, "2023-05-07", ("m0",)),
        ("Melanie: We ran a charity race last Saturday (on 6 May 2023).", None, "2023-05-06", ("m1",)),
        ("Melanie painted that lake sunrise two weeks ago (in the week of 24 April 2023)!", None, "2023-04-24", ("m2",)),
    ]


def test_plans_and_intentions_with_future_dates(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-plans", [
        ("Caroline", "I'm planning to go camping next month."),
        ("Jon", "I want to open my own dance studio."),
        ("Jon", "We'll see each other on Friday."),
        ("Jon", "I'll never do that again."),
        ("Jon", "I went camping yesterday."),
    ])
    assert out == [
        ("Caroline is planning to go camping next month (in June 2023).", None, "2023-06-01", ("m0",)),
        ("Jon wants to open Jon's own dance studio.", None, None, ("m1",)),
        ("Jon: We'll see each other on Friday (on 12 May 2023).", None, "2023-05-12", ("m2",)),
    ]


def test_relationships_name_who_is_who(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-relationships", [
        ("Melanie", "My sister Anna moved to Rome."),
        ("Melanie", "Jon is my brother, and my husband Tom loves it."),
        ("Caroline", "My kids love the beach."),
        ("Caroline", "I went camping with my kids."),  # a relation in passing: another skill's sentence
    ])
    assert out == [
        ("Anna is Melanie's sister.", None, None, ("m0",)),
        ("Tom is Melanie's husband.", "melanie/husband", None, ("m1",)),
        ("Jon is Melanie's brother.", None, None, ("m1",)),
        ("Caroline's kids love the beach.", None, None, ("m2",)),
    ]


def test_procedures_from_the_assistant_keep_the_question(cards: list[SkillCard]) -> None:
    steps = "1. Open Settings\n2. Tap Wi-Fi\n3. Forget the network"
    out = run_skill(cards, "capture-procedures", [
        (None, "How do I reset my wifi?"), (None, steps), (None, "First preheat the oven, then add the dough."),
        (None, "I baked bread yesterday."),
    ], roles=[Role.USER, Role.ASSISTANT, Role.USER, Role.USER])
    assert out == [
        (f"How do I reset my wifi?\n{steps}", None, None, ("m0", "m1")),
        ("First preheat the oven, then add the dough.", None, None, ("m2",)),
    ]


def test_tool_results_pair_the_call_and_say_why_a_short_one_is_not_kept(cards: list[SkillCard]) -> None:
    runtime = SkillRuntime(cards, default_executors(None, SkillsConfig()), AllSkillsController())
    spans = [Span("c1", Role.ASSISTANT, "search_flights(from='BER', to='LIS', date='2023-06-01')", MONDAY, index=0),
             Span("r1", Role.TOOL, '[{"flight": "TP 555", "price": 129}]', MONDAY, name="search_flights", index=1),
             Span("r2", Role.TOOL, "ok", MONDAY, name="book", index=2)]
    run = RuntimeRun()
    runtime.derive(spans, np.zeros((3, 4), np.float32), [True] * 3, run, SkillContext(spans=spans), only=["capture-tool-results"])
    assert [(op.content, op.source_ids) for op in run.operations] == [(
        "search_flights(from='BER', to='LIS', date='2023-06-01')\nsearch_flights returned: "
        '[{"flight": "TP 555", "price": 129}]', ("c1", "r1"))]
    assert run.skills["capture-tool-results"].noops == [{"source_ids": ["r2"], "reason": "tool result shorter than 20 characters"}]


def test_terminology_and_abbreviations(cards: list[SkillCard]) -> None:
    out = run_skill(cards, "capture-terminology", [
        ("Ann", "PTO stands for paid time off."), ("Ann", "Our Net Promoter Score (NPS) went up."),
        ("Ann", "By standup I mean the 9:30 call"), ("Ann", "The NPS (net promoter score) is a metric."),
    ])
    assert out == [
        ("PTO means paid time off.", "term:pto", None, ("m0",)),
        ("NPS means Net Promoter Score.", "term:nps", None, ("m1",)),
        ("standup means the 9:30 call.", "term:standup", None, ("m2",)),
        ("NPS means net promoter score.", "term:nps", None, ("m3",)),
    ]


def test_cards_limit_roles_and_triggers_choose(cards: list[SkillCard]) -> None:
    spans = [Span("u", Role.USER, "I moved to Lisbon last month.", MONDAY, name="Ann", index=0),
             Span("a", Role.ASSISTANT, "1. Pack\n2. Ship the boxes", MONDAY, index=1),
             Span("t", Role.TOOL, "200 OK: booked", MONDAY, name="movers", index=2)]
    bank = [c for c in cards if c.selection == "controller" and c.executor == "offline"]
    every = AllSkillsController().select(spans, np.zeros((3, 4)), bank)
    assert every == [
        ["capture-events", "capture-personal-facts", "capture-plans", "capture-preferences",
         "capture-procedures", "capture-relationships", "capture-terminology"],
        ["capture-procedures", "capture-terminology"],
        ["capture-tool-results"],
    ]
    assert TriggerController().select(spans, np.zeros((3, 4)), bank) == [
        ["capture-events", "capture-personal-facts"], ["capture-procedures"], ["capture-tool-results"]]


def test_an_operation_the_card_does_not_allow_becomes_a_noop_with_a_reason(cards: list[SkillCard]) -> None:
    card = next(c for c in cards if c.id == "capture-procedures").model_copy(update={"operations": ["NOOP"]})
    runtime = SkillRuntime([card], default_executors(None, SkillsConfig()), AllSkillsController())
    spans = [Span("m", Role.USER, "1. a b\n2. c d", MONDAY)]
    run = RuntimeRun()
    runtime.derive(spans, np.zeros((1, 4), np.float32), [True], run, SkillContext(spans=spans))
    assert run.operations == []
    assert run.skills["capture-procedures"].noops == [{"source_ids": ["m"], "reason": "INSERT is not among the card's operations"}]
    assert run.skills["capture-procedures"].operations == 0


def test_every_card_parses_and_names_an_installed_executor(cards: list[SkillCard]) -> None:
    runtime = SkillRuntime(cards, default_executors(None, SkillsConfig()), TriggerController())
    inactive = {c.id: runtime.inactive_reason(c) for c in cards if not runtime.active(c)}
    assert inactive == {"episode-digest": "no executor 'offline:digest' is installed",
                        "llm-memory-manager": "no LLM configured (MEMSVC_LLM__KIND)"}
    assert all(set(c.sections) == {"Purpose", "When to use", "How to apply", "Constraints"} for c in cards)
    assert all(OpKind(o) for c in cards for o in c.operations)
