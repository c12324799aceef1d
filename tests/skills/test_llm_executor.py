"""The LLM executor: prompt rendering and reply parsing on replies shaped as OpenAI-compatible
servers send them (JSON mode, fenced, broken), and a live run against a real endpoint when
`MEMSVC_TEST_LLM_URL` is set (marker llm)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memsvc.config import OpenAILLM, Settings, SkillsConfig
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryCube, MemoryType, Role
from memsvc.schemas import MessageIn, WriteRequest
from memsvc.skills import SkillCard, load_skill_bank
from memsvc.skills.llm import parse_operations, render_prompt
from memsvc.skills.types import OpKind, Span

BANK = Path(__file__).resolve().parents[2] / "skills"
SPAN = Span("m9", Role.USER, "I moved from Berlin to Lisbon last week.", datetime(2024, 2, 1, tzinfo=UTC), name="Ann")
STORED = [MemoryCube(id="mem-berlin", tenant="t", user_id="u", type=MemoryType.SEMANTIC, content="Ann lives in Berlin."),
          MemoryCube(id="mem-tea", tenant="t", user_id="u", type=MemoryType.REFINED, content="Ann likes green tea.")]


@pytest.fixture(scope="module")
def card() -> SkillCard:
    return next(c for c in load_skill_bank(BANK) if c.id == "llm-memory-manager")


def test_the_prompt_is_the_cards_instructions_with_numbered_memories(card: SkillCard) -> None:
    system, user = render_prompt(card, SPAN, STORED)
    assert system["role"] == "system" and card.sections["How to apply"] in system["content"]
    assert card.sections["Constraints"] in system["content"]
    assert user["content"] == ("Existing memories:\n[0] (semantic) Ann lives in Berlin.\n[1] (refined) Ann likes green tea."
                               "\n\nNew message from Ann (2024-02-01):\nI moved from Berlin to Lisbon last week.")


def test_a_reply_becomes_operations_with_the_real_ids_and_the_span_as_source(card: SkillCard) -> None:
    reply = ('```json\n{"operations": [{"op": "UPDATE", "id": 0, "content": "Ann lives in Lisbon since late January 2024.",'
             ' "reason": "moved"}, {"op": "ADD", "type": "semantic", "content": "Ann moved from Berlin to Lisbon in the week '
             'of 22 January 2024.", "reason": "event"}, {"op": "NOOP", "reason": "tea unchanged"}]}\n```')
    ops, error = parse_operations(reply, card, SPAN, STORED)
    assert error is None
    assert [(o.op, o.target_id, o.type, o.content, o.source_ids) for o in ops] == [
        (OpKind.UPDATE, "mem-berlin", None, "Ann lives in Lisbon since late January 2024.", ("m9",)),
        (OpKind.INSERT, None, MemoryType.SEMANTIC, "Ann moved from Berlin to Lisbon in the week of 22 January 2024.", ("m9",)),
        (OpKind.NOOP, None, None, "", ("m9",)),
    ]
    assert ops[2].reason == "the LLM chose NOOP: tea unchanged"


@pytest.mark.parametrize(("reply", "error"), [
    ("", "the reply was empty"),
    ("Sure! Ann moved.", "the reply holds no JSON object"),
    ('{"operations": [{"op": "ADD", "content": "x",}]}', "the JSON does not parse (Expecting property name enclosed in double quotes at character 45)"),
    ('{"ops": []}', 'the object has no "operations" list'),
    ('{"operations": [{"op": "MERGE"}]}', "operation 0 has op 'MERGE'; use ADD, UPDATE, DELETE or NOOP"),
    ('{"operations": [{"op": "DELETE", "id": 7}]}', "operation 0 names memory 7, which is not listed"),
    ('{"operations": [{"op": "DELETE", "id": "mem-tea"}]}', "operation 0 names memory 'mem-tea', which is not listed"),
    ('{"operations": [{"op": "ADD", "type": "semantic"}]}', "operation 0 (INSERT) has no content"),
    ('{"operations": [{"op": "ADD", "type": "episodic", "content": "x"}]}',
     "operation 0 has type 'episodic'; allowed: semantic, refined, procedural"),
])
def test_malformed_replies_say_what_is_wrong(card: SkillCard, reply: str, error: str) -> None:
    assert parse_operations(reply, card, SPAN, STORED) == ([], error)


@pytest.fixture
def live_os(tmp_path: Path) -> Iterator[MemoryOS]:
    url = os.environ.get("MEMSVC_TEST_LLM_URL")
    if not url:
        pytest.skip("MEMSVC_TEST_LLM_URL not set")
    from storage.registry import build_memory_os

    llm = OpenAILLM(base_url=url, api_key=os.environ.get("MEMSVC_TEST_LLM_KEY"),
                    model=os.environ.get("MEMSVC_TEST_LLM_MODEL", "gpt-4o-mini"))
    memory_os = build_memory_os(Settings(data_dir=tmp_path, llm=llm, skills=SkillsConfig(controller="all")))
    yield memory_os
    memory_os.close()


@pytest.mark.llm
def test_live_llm_executor_writes_or_says_why_not_and_counts_tokens(live_os: MemoryOS) -> None:
    only = ["llm-memory-manager"]
    first = live_os.writer.write("t", WriteRequest(user_id="u", messages=[MessageIn(
        id="a", role=Role.USER, name="Ann", content="I live in Berlin and I work as a nurse.")]), only=only)
    second = live_os.writer.write("t", WriteRequest(user_id="u", messages=[MessageIn(
        id="b", role=Role.USER, name="Ann", content="Big news: I moved to Lisbon last week!")]), only=only)
    events = live_os.records.events("t", user_id="u", kinds=["write"]).items
    for event in events:
        stats = event.payload["skills"]["llm-memory-manager"]
        assert stats["llm_calls"] >= 1 and event.payload["tokens"]["prompt"] > 0
        # every span has an outcome: a write, a change, or a NOOP with its reason
        outcomes = stats["operations"] + len(stats.get("noops", []))
        assert outcomes >= 1 and all(n["reason"] for n in stats.get("noops", []))
    derived = [m for m in first.written + second.written if m["type"] != "episodic"]
    assert all(m["source_ids"] in (["a"], ["b"]) for m in derived)
